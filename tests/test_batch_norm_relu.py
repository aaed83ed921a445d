"""BatchNormReLU against flax's nn.BatchNorm + nn.relu: values, gradients, statistics, ResNet-32."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.models import resnet_cifar
from ltjax.models.batch_norm_relu import BatchNormReLU
from ltjax.models.batch_norm_relu import UnfusedBatchNormReLU
from ltjax.train import sharding


def _variables(rng, c, dtype=np.float32):
  return {
      'params': {
          'scale': jnp.asarray(rng.uniform(0.5, 1.5, c), dtype),
          'bias': jnp.asarray(rng.normal(size=c), dtype),
      },
      'batch_stats': {
          'mean': jnp.asarray(rng.normal(size=c), np.float32),
          'var': jnp.asarray(rng.uniform(0.5, 2.0, c), np.float32),
      },
  }


def _inputs(rng, shape=(6, 5, 4, 8), dtype=np.float32):
  # An offset mean, as a convolution's output has: the centring must be exact.
  y = jnp.asarray(rng.normal(size=shape) * 2.0 + 3.0, dtype)
  shortcut = jnp.asarray(rng.normal(size=shape), dtype)
  return y, shortcut


def _both(train_mode, dtype=jnp.float32, momentum=0.9):
  kwargs = dict(use_running_average=not train_mode, momentum=momentum, epsilon=1e-5, dtype=dtype)
  return BatchNormReLU(**kwargs), UnfusedBatchNormReLU(**kwargs)


@pytest.mark.parametrize('with_shortcut', [False, True])
@pytest.mark.parametrize('train_mode', [True, False])
def test_values_and_running_averages_equal_flax(with_shortcut, train_mode):
  rng = np.random.default_rng(0)
  y, shortcut = _inputs(rng)
  variables = _variables(rng, y.shape[-1])
  args = (y, shortcut) if with_shortcut else (y,)
  fused, reference = _both(train_mode, momentum=0.8)
  out, new = fused.apply(variables, *args, mutable=['batch_stats'])
  ref_out, ref_new = reference.apply(variables, *args, mutable=['batch_stats'])
  chex.assert_trees_all_close(out, ref_out, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(new, ref_new, rtol=1e-6, atol=1e-6)
  if train_mode:  # And against numpy: batch statistics, biased variance.
    yn = np.asarray(y, np.float64)
    mean, var = yn.mean((0, 1, 2)), yn.var((0, 1, 2))
    p = variables['params']
    pre = (yn - mean) / np.sqrt(var + 1e-5) * np.asarray(p['scale']) + np.asarray(p['bias'])
    if with_shortcut:
      pre = pre + np.asarray(shortcut)
    np.testing.assert_allclose(out, np.maximum(pre, 0), rtol=1e-5, atol=1e-5)
    stats = variables['batch_stats']
    np.testing.assert_allclose(
        new['batch_stats']['mean'], 0.8 * stats['mean'] + 0.2 * mean, rtol=1e-5
    )
    np.testing.assert_allclose(new['batch_stats']['var'], 0.8 * stats['var'] + 0.2 * var, rtol=1e-5)


def test_initial_variables_are_flax_batch_norms():
  y, _ = _inputs(np.random.default_rng(0))
  fused, reference = _both(True)
  chex.assert_trees_all_equal(
      fused.init(jax.random.key(0), y), reference.init(jax.random.key(0), y)
  )


@pytest.mark.parametrize('with_shortcut', [False, True])
@pytest.mark.parametrize('train_mode', [True, False])
def test_gradients_equal_autodiff_of_flax_in_float64(x64, with_shortcut, train_mode):
  """Training mode (the closed form) and inference mode (frozen BN, autodiff)."""
  rng = np.random.default_rng(1)
  y, shortcut = _inputs(rng, dtype=np.float64)
  variables = _variables(rng, y.shape[-1], dtype=np.float64)
  weights = jnp.asarray(rng.normal(size=y.shape))  # A loss that weighs every output.
  fused, reference = _both(train_mode, dtype=jnp.float64)

  def loss(module, params, y, shortcut):
    args = (y, shortcut) if with_shortcut else (y,)
    out, _ = module.apply({**variables, 'params': params}, *args, mutable=['batch_stats'])
    return jnp.sum(weights * out)

  grads = jax.grad(functools.partial(loss, fused), argnums=(0, 1, 2))(
      variables['params'], y, shortcut
  )
  ref = jax.grad(functools.partial(loss, reference), argnums=(0, 1, 2))(
      variables['params'], y, shortcut
  )
  chex.assert_trees_all_close(grads, ref, rtol=1e-9, atol=1e-11)
  # And against central differences along a random direction.
  direction = jnp.asarray(rng.normal(size=y.shape))
  h = 1e-6
  numeric = (
      loss(fused, variables['params'], y + h * direction, shortcut)
      - loss(fused, variables['params'], y - h * direction, shortcut)
  ) / (2 * h)
  np.testing.assert_allclose(jnp.vdot(grads[1], direction), numeric, rtol=1e-6)


def test_bfloat16_inputs_give_bfloat16_outputs_and_gradients():
  rng = np.random.default_rng(2)
  y, shortcut = _inputs(rng)
  variables = _variables(rng, y.shape[-1])
  weights = jnp.asarray(rng.normal(size=y.shape), jnp.float32)

  def loss(module, y, shortcut):
    out, _ = module.apply(variables, y, shortcut, mutable=['batch_stats'])
    return jnp.sum(weights * out.astype(jnp.float32)), out

  def value_and_grads(module, dtype):
    return jax.value_and_grad(functools.partial(loss, module), argnums=(0, 1), has_aux=True)(
        y.astype(dtype), shortcut.astype(dtype)
    )

  (_, out), grads = value_and_grads(BatchNormReLU(False, dtype=jnp.bfloat16), jnp.bfloat16)
  (_, ref), ref_grads = value_and_grads(UnfusedBatchNormReLU(False), jnp.float32)
  assert out.dtype == jnp.bfloat16
  assert grads[0].dtype == grads[1].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=0.02, atol=0.05)
  for g, r in zip(grads, ref_grads):  # bfloat16 rounding; a wrong term would be O(1).
    scale = float(jnp.max(jnp.abs(r)))
    np.testing.assert_allclose(np.asarray(g, np.float32) / scale, r / scale, atol=0.05)


def test_statistics_come_from_the_input_before_the_cast_to_dtype():
  """float32 input, bfloat16 module: flax takes the statistics from the float32 input."""
  rng = np.random.default_rng(4)
  y, _ = _inputs(rng)
  variables = _variables(rng, y.shape[-1])
  fused, reference = _both(True, dtype=jnp.bfloat16)
  out, new = fused.apply(variables, y, mutable=['batch_stats'])
  ref_out, ref_new = reference.apply(variables, y, mutable=['batch_stats'])
  assert out.dtype == ref_out.dtype == jnp.bfloat16
  chex.assert_trees_all_close(new, ref_new, rtol=1e-6, atol=1e-6)


def test_a_batch_sharded_over_eight_devices_gives_the_single_device_numbers():
  """Statistics over the global batch: jit inserts the cross-device sums."""
  rng = np.random.default_rng(5)
  y, shortcut = _inputs(rng, shape=(16, 4, 4, 8))
  variables = _variables(rng, y.shape[-1])
  module = BatchNormReLU(use_running_average=False)

  def grads(params, y, shortcut):
    def loss(params, y, shortcut):
      out, new = module.apply({**variables, 'params': params}, y, shortcut, mutable=['batch_stats'])
      return jnp.sum(jnp.sin(out)), new

    return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, y, shortcut)

  mesh = sharding.make_mesh()
  assert mesh.size == 8
  sharded = jax.device_put((y, shortcut), sharding.batch_sharded(mesh))
  on_mesh = jax.jit(grads)(variables['params'], *sharded)
  one_device = jax.jit(grads)(variables['params'], y, shortcut)
  chex.assert_trees_all_close(on_mesh, one_device, rtol=1e-5, atol=1e-6)


def test_a_nan_input_stays_visible():
  """A diverged activation must reach the loss (the loop stops on a NaN loss)."""
  rng = np.random.default_rng(3)
  y, _ = _inputs(rng)
  variables = _variables(rng, y.shape[-1])
  for train_mode in (True, False):
    out, _ = _both(train_mode)[0].apply(variables, y.at[0, 0, 0, 0].set(jnp.nan), mutable=True)
    assert np.isnan(np.asarray(out)).any()


def test_resnet32_train_step_equals_the_flax_batch_norm_network(monkeypatch):
  """One SGD step of ResNet-32: the same update as nn.BatchNorm + nn.relu everywhere."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  objective = losses.simple_objective(
      functools.partial(losses.softmax_cross_entropy, reduction='mean')
  )
  rng = np.random.default_rng(0)
  batch = sharding.to_global(
      {
          'image': rng.normal(size=(8, 16, 16, 3)).astype(np.float32),
          'label': rng.integers(0, 10, 8).astype(np.int32),
      },
      mesh,
  )
  config = ml_collections.ConfigDict({'name': 'resnet32', 'head': 'linear'})
  after = {}
  for label in ('fused', 'flax'):
    if label == 'flax':
      monkeypatch.setattr(resnet_cifar, 'BatchNormReLU', UnfusedBatchNormReLU)
    state = train.create_train_state(
        models.build_model(config, 10),
        optim.torch_sgd(0.1, momentum=0.9),
        input_shape=(16, 16, 3),
        seed=0,
        mesh=mesh,
    )
    step = train.make_train_step(state, mesh, objective=objective)
    after[label], metrics = step(state, batch)
    after[label + '_loss'] = metrics['loss']
  assert jax.tree.structure(after['fused'].params) == jax.tree.structure(after['flax'].params)
  np.testing.assert_allclose(after['fused_loss'], after['flax_loss'], rtol=1e-6)
  chex.assert_trees_all_close(after['fused'].params, after['flax'].params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(
      after['fused'].batch_stats, after['flax'].batch_stats, rtol=1e-5, atol=1e-6
  )
