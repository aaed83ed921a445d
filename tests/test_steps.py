"""Tests for ltjax.train.steps: the jitted train step on 1 and 8 devices, SAM, head-only."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import tiny_config
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding


def run_steps(mesh, batches, dtype=jnp.float32, cc_sam=False):
  config = tiny_config()
  if cc_sam:  # A radius large enough to matter.
    config.cc_sam.flat_ratio, config.cc_sam.noise_ratio = 0.5, 0.5
  model = models.build_model(config.model, 10, dtype=dtype)
  tx = optim.torch_sgd(0.05, momentum=0.9, weight_decay=5e-4)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  objective = losses.build_objective(
      config.loss,
      np.arange(10) * 10 + 5,
      steps_per_epoch=10,
      num_epochs=1,
      cc_sam_config=config.cc_sam,
  )
  step = train.make_train_step(state, mesh, objective=objective)
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, mesh))
  assert step._cache_size() == 1  # Traced and compiled once.
  return jax.device_get(state), jax.device_get(metrics)


def random_batches(n, size=32):
  rng = np.random.default_rng(0)
  return [
      {
          'image': rng.normal(size=(size, 28, 28, 1)).astype(np.float32),
          'label': rng.integers(0, 10, size).astype(np.int32),
      }
      for _ in range(n)
  ]


@pytest.mark.parametrize('cc_sam', [False, True])
def test_eight_device_step_equals_one_device_step(cc_sam):
  assert jax.device_count() == 8
  batches = random_batches(3)
  one, one_metrics = run_steps(sharding.make_mesh(jax.devices()[:1]), batches, cc_sam=cc_sam)
  eight, eight_metrics = run_steps(sharding.make_mesh(), batches, cc_sam=cc_sam)
  if cc_sam:
    assert one_metrics['cc_sam_flat_loss'] > 0
  # Global BatchNorm statistics: the sharded step is the same computation.
  chex.assert_trees_all_close(
      (one.params, one.batch_stats), (eight.params, eight.batch_stats), rtol=1e-4, atol=1e-5
  )
  np.testing.assert_allclose(one_metrics['loss'], eight_metrics['loss'], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  state, metrics = run_steps(sharding.make_mesh(), random_batches(2), dtype=jnp.bfloat16)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
  assert np.isfinite(metrics['loss'])


def test_head_only_step_equals_the_full_backward_step():
  """stop_gradient at the features changes nothing when the backbone is frozen."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.build_model(tiny_config().model, 10)
  tx = optim.freeze(optim.torch_sgd(0.1, momentum=0.9, weight_decay=5e-4), 'head/.*')
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  rng = np.random.default_rng(0)
  batch = sharding.to_global(
      {
          'image': rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
          'label': rng.integers(0, 10, 8).astype(np.int32),
      },
      mesh,
  )
  objective = losses.simple_objective(
      functools.partial(losses.softmax_cross_entropy, reduction='mean')
  )
  outs = [
      train.steps.train_step(state, batch, objective=objective, head_only=h) for h in (False, True)
  ]
  chex.assert_trees_all_close(outs[0][0].params, outs[1][0].params, rtol=1e-7, atol=1e-6)
  chex.assert_trees_all_close(outs[0][0].batch_stats, outs[1][0].batch_stats, rtol=1e-7, atol=1e-6)
  assert np.isclose(outs[0][1]['loss'], outs[1][1]['loss'])


@pytest.mark.parametrize('batch_norm', ['clean_pass', 'both_passes'])
def test_sam_step_uses_the_perturbed_gradient_and_the_chosen_bn_statistics(batch_norm):
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = tiny_config()
  model = models.build_model(config.model, 10)
  rho, lr = 0.5, 0.1
  tx = optim.sam(optim.torch_sgd(lr, momentum=0.0), rho=rho)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  objective = losses.build_objective(config.loss, np.ones(10), steps_per_epoch=10, num_epochs=1)
  batch = random_batches(1, size=8)[0]
  step = train.make_train_step(
      state, mesh, objective=objective, sam=True, sam_batch_norm=batch_norm
  )
  before = jax.device_get(state)

  def loss_and_stats(params, batch_stats):
    (logits, _), new = model.apply(
        {'params': params, 'batch_stats': batch_stats},
        batch['image'],
        train=True,
        mutable=['batch_stats'],
    )
    return losses.softmax_cross_entropy(logits, batch['label'], reduction='mean'), new

  grads, clean_stats = jax.grad(loss_and_stats, has_aux=True)(before.params, before.batch_stats)
  norm = optax.tree.norm(grads)
  perturbed = jax.tree.map(lambda p, g: p + rho * g / (norm + 1e-12), before.params, grads)
  adv_grads, _ = jax.grad(loss_and_stats, has_aux=True)(perturbed, before.batch_stats)
  expected = jax.tree.map(lambda p, g: p - lr * g, before.params, adv_grads)
  # PyTorch's order (davda54's SAM): the perturbed forward pass in train mode updates the
  # running statistics the clean pass has just updated.
  _, both_stats = loss_and_stats(perturbed, clean_stats['batch_stats'])

  after, _ = step(state, sharding.to_global(batch, mesh))
  after = jax.device_get(after)
  chex.assert_trees_all_close(after.params, expected, rtol=1e-4, atol=1e-6)
  gap = max(
      float(np.max(np.abs(a - b)))
      for a, b in zip(jax.tree.leaves(clean_stats), jax.tree.leaves(both_stats))
  )
  assert gap > 1e-4  # The two choices' statistics are distinguishable ...
  # ... and the chosen ones are kept.
  kept = clean_stats if batch_norm == 'clean_pass' else both_stats
  chex.assert_trees_all_close(after.batch_stats, kept['batch_stats'], rtol=0, atol=1e-6)


def test_cpu_steps_keep_convolutions_off_ynnpack(monkeypatch):
  """The CPU compile option is applied, and either opt-out leaves XLA's defaults."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  monkeypatch.delenv('LTJAX_XLA_CPU_DEFAULTS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  options = train.steps.compiler_options(mesh)
  assert options == {
      'xla_cpu_experimental_ynn_fusion_type': (
          'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'
      )
  }
  monkeypatch.setenv('LTJAX_XLA_CPU_DEFAULTS', '0')
  assert train.steps.compiler_options(mesh) is None
  monkeypatch.delenv('LTJAX_XLA_CPU_DEFAULTS')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert train.steps.compiler_options(mesh) is None
