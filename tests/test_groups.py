"""Tests for ltjax.optim.groups: freezing and per-group optimisers by parameter-path regex."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import head_params
from ltjax.optim.groups import freeze
from ltjax.optim.groups import per_group
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sgd import torch_sgd


def model_params():
  return {
      'backbone': {'conv': {'kernel': jnp.ones((3, 3, 2, 4))}, 'bn': {'scale': jnp.ones(4)}},
      'head': {'kernel': jnp.ones((4, 5)), 'bias': jnp.zeros(5)},
  }


def test_freeze_keeps_frozen_parameters_bitwise():
  params = model_params()
  tx = freeze(torch_sgd(0.1, momentum=0.9, weight_decay=0.1), r'head/.*')
  state = tx.init(params)
  # Momentum buffers exist for the head only.
  head_size = sum(p.size for p in jax.tree.leaves(params['head']))
  assert sum(x.size for x in jax.tree.leaves(state) if jnp.ndim(x) > 0) == head_size
  new = params
  for i in range(3):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.3 + i), new)
    updates, state = jax.jit(tx.update)(grads, state, new)
    new = optax.apply_updates(new, updates)
  jax.tree.map(np.testing.assert_array_equal, new['backbone'], params['backbone'])
  for name in ('kernel', 'bias'):
    assert not np.allclose(new['head'][name], params['head'][name])


def test_per_group_learning_rates_and_unmatched_paths():
  params = model_params()
  tx = per_group([(r'head/.*', optax.sgd(0.1)), (r'backbone/.*', optax.sgd(0.01))])
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['head']['kernel'], -0.1)
  np.testing.assert_allclose(updates['backbone']['bn']['scale'], -0.01)
  with pytest.raises(ValueError, match='no group'):
    per_group([(r'head/.*', optax.sgd(0.1))]).init(params)
  with pytest.raises(ValueError, match='matches no parameter'):
    freeze(optax.sgd(0.1), r'classifier/.*').init(params)


def test_weight_balancing_stage2_chain_inside_freeze():
  # projected_max_norm also works on freeze's masked trees (frozen leaves are MaskedNodes).
  params = head_params([1.0, 3.0, 2.0, 5.0])
  tx = freeze(
      optax.chain(
          torch_sgd(0.1, momentum=0.9, weight_decay=0.1), projected_max_norm(head_max_norm(params))
      ),
      r'head/.*',
  )
  state, new = tx.init(params), params
  grads = jax.tree.map(lambda p: -jnp.ones_like(p), params)
  for _ in range(2):
    updates, state = tx.update(grads, state, new)
    new = optax.apply_updates(new, updates)
  assert np.all(np.linalg.norm(new['head']['kernel'], axis=0) <= 1.4 * (1 + 1e-6))
  np.testing.assert_array_equal(new['backbone']['w'], params['backbone']['w'])
