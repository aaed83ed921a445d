"""Tests for ltjax.optim.maxnorm: projected MaxNorm's thresholds and per-class projection."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import head_params
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import max_norm_thresholds
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sgd import torch_sgd


def test_max_norm_thresholds_formula():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  np.testing.assert_allclose(
      max_norm_thresholds(params['head']['kernel']), 1.0 + 0.1 * 4.0, rtol=1e-6
  )
  np.testing.assert_allclose(
      max_norm_thresholds(params['head']['kernel'], thresh=0.5), 3.0, rtol=1e-6
  )
  thresholds = head_max_norm(params)
  assert thresholds['head']['bias'] is None and thresholds['backbone']['w'] is None
  np.testing.assert_allclose(thresholds['head']['kernel'], 1.4, rtol=1e-6)
  with pytest.raises(ValueError, match='matches'):
    head_max_norm(params, regex='classifier/kernel')


def test_max_norm_projects_columns_and_leaves_the_rest():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  tau = 1.4
  tx = projected_max_norm(head_max_norm(params))
  updates = jax.tree.map(lambda p: 0.01 * jnp.ones_like(p), params)
  out, _ = tx.update(updates, tx.init(params), params)
  new = optax.apply_updates(params, out)
  norms = np.linalg.norm(new['head']['kernel'], axis=0)
  assert np.all(norms <= tau * (1 + 1e-6))
  np.testing.assert_allclose(norms[1:], tau, rtol=1e-6)  # the three outside land on the sphere
  # Projection only rescales: directions of the unprojected new columns are kept.
  unprojected = params['head']['kernel'] + updates['head']['kernel']
  cosine = np.sum(new['head']['kernel'] * unprojected, 0) / (
      norms * np.linalg.norm(unprojected, axis=0)
  )
  np.testing.assert_allclose(cosine, 1.0, rtol=1e-6)
  # Column 0 is inside the ball, bias and backbone unconstrained: updates bitwise kept.
  np.testing.assert_array_equal(out['head']['kernel'][:, 0], updates['head']['kernel'][:, 0])
  np.testing.assert_array_equal(out['head']['bias'], updates['head']['bias'])
  np.testing.assert_array_equal(out['backbone']['w'], updates['backbone']['w'])


def test_max_norm_is_an_exact_noop_inside_the_ball():
  params = head_params([0.5, 0.7, 0.9])
  tx = projected_max_norm(
      {
          'backbone': {'w': None},
          'head': {'kernel': jnp.array([1.0, 1.0, 2.0]), 'bias': float('inf')},
      }
  )
  updates = jax.tree.map(lambda p: 1e-3 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  out, _ = jax.jit(tx.update)(updates, tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, out, updates)


def test_max_norm_per_class_thresholds_and_chain():
  params = head_params([1.0, 2.0, 3.0])
  taus = jnp.array([0.5, 2.5, 1.0])
  tx = optax.chain(
      torch_sgd(0.1, momentum=0.9, weight_decay=0.01),
      projected_max_norm({'backbone': {'w': None}, 'head': {'kernel': taus, 'bias': None}}),
  )
  state = tx.init(params)
  grads = jax.tree.map(lambda p: -jnp.ones_like(p), params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    assert np.all(np.linalg.norm(params['head']['kernel'], axis=0) <= taus * (1 + 1e-6))


def test_max_norm_per_epoch_projects_only_on_the_nth_step():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  tx = projected_max_norm(head_max_norm(params), every_n_steps=3)
  state = tx.init(params)
  updates = jax.tree.map(jnp.zeros_like, params)
  for step in range(6):
    out, state = tx.update(updates, state, params)
    norms = np.linalg.norm(optax.apply_updates(params, out)['head']['kernel'], axis=0)
    if step % 3 == 2:
      assert np.all(norms <= 1.4 * (1 + 1e-6))
    else:
      jax.tree.map(np.testing.assert_array_equal, out, updates)


def test_max_norm_needs_params_and_valid_thresholds():
  params = head_params([1.0, 2.0])
  tx = projected_max_norm(head_max_norm(params))
  with pytest.raises(ValueError, match='params'):
    tx.update(params, tx.init(params))
  with pytest.raises(ValueError, match='per column'):
    projected_max_norm(
        {'backbone': {'w': None}, 'head': {'kernel': jnp.ones(5), 'bias': None}}
    ).init(params)
  with pytest.raises(ValueError, match='positive'):
    projected_max_norm({'head': {'kernel': -1.0}})
  with pytest.raises(ValueError, match='every_n_steps'):
    projected_max_norm(head_max_norm(params), every_n_steps=0)
