"""Tests for ltjax.optim.build: a stage's optimiser from its config, wrapped in order."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from helpers import head_params
from ltjax import optim

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 0.05


def stage_config(**overrides):
  """A base config with SGD (lr 0.1, momentum 0.9, weight decay 0.05) and flattened overrides."""
  config = base.get_config()
  config.optim.lr, config.optim.momentum, config.optim.weight_decay = LR, MOMENTUM, WEIGHT_DECAY
  config.update_from_flattened_dict(overrides)
  return config


def build(config, **kwargs):
  return optim.build_optimizer(config, lambda count: LR, steps_per_epoch=5, **kwargs)


def model_params():
  rng = np.random.default_rng(0)
  normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {
      'backbone': {'conv': {'kernel': normal(3, 3, 2, 4)}, 'bn': {'scale': normal(4)}},
      'head': {'kernel': normal(4, 5), 'bias': normal(5)},
  }


def run(tx, params, grads_of_step, steps, **extra):
  """[(updates, params after)] of ``steps`` updates with gradients ``grads_of_step(i)``."""
  state, out = tx.init(params), []
  for i in range(steps):
    updates, state = tx.update(grads_of_step(i), state, params, **extra)
    params = optax.apply_updates(params, updates)
    out.append((updates, params))
  return out, state


def test_frozen_leaves_get_exactly_zero_update_without_decay_or_momentum():
  params = model_params()
  tx = build(stage_config(), trainable='head/.*')
  grads = lambda i: jax.tree.map(lambda p: jnp.full_like(p, 0.3 + i), params)
  out, state = run(tx, params, grads, 3)
  # No momentum buffer (nor any other state) for a frozen leaf.
  head_size = sum(p.size for p in jax.tree.leaves(params['head']))
  assert sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0) == head_size
  for updates, _ in out:  # Weight decay would move them even without a gradient.
    for leaf in jax.tree.leaves(updates['backbone']):
      np.testing.assert_array_equal(leaf, 0.0)
  chex.assert_trees_all_equal(out[-1][1]['backbone'], params['backbone'])
  # The head trains exactly as the base optimiser alone on the head (numpy PyTorch SGD).
  theta, buf = {k: np.asarray(v, np.float64) for k, v in params['head'].items()}, {}
  for i in range(3):
    for k in theta:
      d = (0.3 + i) + WEIGHT_DECAY * theta[k]
      buf[k] = d if i == 0 else MOMENTUM * buf[k] + d
      theta[k] = theta[k] - LR * buf[k]
  chex.assert_trees_all_close(out[-1][1]['head'], theta, rtol=1e-5, atol=1e-6)


def test_all_parameters_train_without_a_trainable_regex():
  params = model_params()
  out, _ = run(build(stage_config()), params, lambda i: jax.tree.map(jnp.ones_like, params), 1)
  for leaf in jax.tree.leaves(out[0][0]):
    assert np.all(np.asarray(leaf) != 0.0)


def test_max_norm_projects_the_final_parameters_after_weight_decay():
  params = head_params([1.0, 3.0, 2.0, 5.0])  # Thresholds 1 + 0.1 (5 - 1) = 1.4.
  config = stage_config(**{'optim.weight_decay': 0.5})
  tx = build(config, trainable='head/.*', max_norm=0.1, initial_params=params)
  grads = jax.tree.map(lambda p: -10.0 * jnp.ones_like(p), params)  # A big step outwards.
  out, _ = run(tx, params, lambda i: grads, 1)
  new = out[0][1]
  # The unprojected step: base optimiser only (gradient, weight decay at theta, momentum).
  base_tx = optim.base_optimizer(config.optim, lambda count: LR)
  base_updates, _ = base_tx.update(grads, base_tx.init(params), params)
  unprojected = np.asarray(params['head']['kernel'] + base_updates['head']['kernel'])
  norms = np.linalg.norm(unprojected, axis=0)
  assert np.all(norms > 1.4)  # Every class vector left its ball ...
  # ... and is scaled back onto it: the projection of params + updates, decay included.
  np.testing.assert_allclose(new['head']['kernel'], unprojected * 1.4 / norms, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(new['head']['kernel'], axis=0), 1.4, rtol=1e-5)
  # The bias is not constrained: the base optimiser's update exactly.
  np.testing.assert_array_equal(out[0][0]['head']['bias'], base_updates['head']['bias'])
  np.testing.assert_array_equal(new['backbone']['w'], params['backbone']['w'])


def test_max_norm_without_initial_params_is_a_clear_error():
  with pytest.raises(ValueError, match='MaxNorm thresholds.*pass initial_params'):
    build(stage_config(), trainable='head/.*', max_norm=0.1)


def test_sam_is_the_outermost_transform_and_needs_grad_fn():
  params = model_params()
  tx = build(stage_config(**{'sam.rho': 0.5}), trainable='head/.*')
  state = tx.init(params)
  assert isinstance(state, optim.SAMState)
  grads = jax.tree.map(jnp.ones_like, params)
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(grads, state, params)
  seen = []

  def grad_fn(p):
    seen.append(p)
    return grads

  updates, state = tx.update(grads, state, params, grad_fn=grad_fn)
  # SAM sees the whole tree: the frozen backbone is perturbed too, by rho g / |g| ...
  size = sum(p.size for p in jax.tree.leaves(params))
  expected = jax.tree.map(lambda p: p + 0.5 / np.sqrt(size), params)
  chex.assert_trees_all_close(seen[0], expected, rtol=1e-6)
  # ... while freeze inside it still gives the backbone exactly zero update.
  for leaf in jax.tree.leaves(updates['backbone']):
    np.testing.assert_array_equal(leaf, 0.0)
  assert int(state.count) == 1


def test_sam_per_epoch_radii_need_one_value_more_than_boundaries():
  config = stage_config(**{'sam.rho_boundaries': (1,), 'sam.rho_values': (0.05, 0.1)})
  assert optim.uses_sam(config)
  assert isinstance(build(config).init(model_params()), optim.SAMState)
  config = stage_config(**{'sam.rho_boundaries': (1, 2), 'sam.rho_values': (0.05, 0.1)})
  with pytest.raises(ValueError, match=r'sam.rho_values needs .* 3 values, got 2'):
    build(config)
  assert not optim.uses_sam(stage_config())


def test_base_optimizer_unknown_name_lists_the_valid_ones():
  config = base.get_config().optim
  config.name = 'adamw'
  with pytest.raises(ValueError, match="valid: \\['sgd'\\]"):
    optim.base_optimizer(config, 0.1)
