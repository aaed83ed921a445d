"""SAM / ASAM, projected MaxNorm and parameter groups (freezing)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax.optim.groups import freeze
from ltjax.optim.groups import per_group
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import max_norm_thresholds
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sam import sam
from ltjax.optim.sam import sam_perturbation
from ltjax.optim.sam import step_rho_schedule
from ltjax.param_paths import path_mask
from ltjax.optim.sgd import torch_sgd

# f(t) = t.A t / 2 + B.t, a convex quadratic.
A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]])
B = np.array([0.2, -0.1, 0.4])
THETA0 = np.array([1.0, -2.0, 0.5])


def quad_grad(params):
  return {'t': jnp.asarray(A, jnp.float32) @ params['t'] + jnp.asarray(B, jnp.float32)}


def run(tx, grad_fn, steps, params=None, sam_step=True):
  params = {'t': jnp.asarray(THETA0, jnp.float32)} if params is None else params
  state = tx.init(params)
  out = []
  for _ in range(steps):
    extra = {'grad_fn': grad_fn} if sam_step else {}
    updates, state = tx.update(grad_fn(params), state, params, **extra)
    params = optax.apply_updates(params, updates)
    out.append(np.asarray(params['t']))
  return np.array(out), state


# ----------------------------------------------------------------------------- SAM


def test_sam_plain_sgd_matches_analytic_step():
  lr, rho = 0.1, 0.05
  out, _ = run(sam(optax.sgd(lr), rho=rho), quad_grad, 1)
  g = A @ THETA0 + B
  expected = THETA0 - lr * (A @ (THETA0 + rho * g / np.linalg.norm(g)) + B)
  np.testing.assert_allclose(out[0], expected, rtol=1e-6, atol=1e-6)
  # The quadratic of the brief, without B: theta - lr A (theta + rho A theta / |A theta|).
  grad0 = lambda p: {'t': jnp.asarray(A, jnp.float32) @ p['t']}
  out, _ = run(sam(torch_sgd(lr, momentum=0.0), rho=rho), grad0, 1)
  at = A @ THETA0
  np.testing.assert_allclose(out[0], THETA0 - lr * A @ (THETA0 + rho * at / np.linalg.norm(at)),
                             rtol=1e-6, atol=1e-6)


def numpy_sam_torch_sgd(lrs, rho, momentum, wd):
  """davda54 SAM around torch.optim.SGD, written out: ascent, restore, decayed step."""
  theta, buf, out = THETA0.copy(), None, []
  for lr in lrs:
    g = A @ theta + B
    e = rho * g / (np.linalg.norm(g) + 1e-12)
    d = A @ (theta + e) + B + wd * theta  # weight decay at the restored theta
    buf = d.copy() if buf is None else momentum * buf + d
    theta = theta - lr * buf
    out.append(theta.copy())
  return np.array(out)


def test_sam_momentum_weight_decay_matches_pytorch_sequence():
  lrs = [0.1, 0.1, 0.05, 0.05, 0.01]
  schedule = lambda count: jnp.asarray(lrs, jnp.float32)[count]
  tx = sam(torch_sgd(schedule, momentum=0.9, weight_decay=0.01), rho=0.2)
  out, state = run(tx, quad_grad, len(lrs))
  np.testing.assert_allclose(out, numpy_sam_torch_sgd(lrs, 0.2, 0.9, 0.01), rtol=1e-5, atol=1e-6)
  assert int(state.count) == len(lrs)


def test_rho_zero_equals_base_optimizer():
  base = lambda: torch_sgd(0.1, momentum=0.9, weight_decay=0.01)
  with_sam, _ = run(sam(base(), rho=0.0), quad_grad, 4)
  plain, _ = run(base(), quad_grad, 4, sam_step=False)
  np.testing.assert_array_equal(with_sam, plain)


def test_masked_sam_perturbs_only_selected_leaves():
  params = {'backbone': {'w': jnp.array([1.0, 2.0])}, 'head': {'kernel': jnp.array([3.0, -1.0])}}
  grads = {'backbone': {'w': jnp.array([0.5, -0.5])}, 'head': {'kernel': jnp.array([3.0, 4.0])}}
  for mask in ({'backbone': False, 'head': True},  # a prefix mask
               functools.partial(path_mask, regex=r'head/.*')):
    e = sam_perturbation(grads, params, 0.5, mask=mask)
    np.testing.assert_array_equal(e['backbone']['w'], 0.0)
    # The norm is over the head only: 0.5 * (3, 4) / 5.
    np.testing.assert_allclose(e['head']['kernel'], [0.3, 0.4], rtol=1e-6)

  seen = []

  def grad_fn(p):
    seen.append(p)
    return grads

  tx = sam(optax.sgd(0.1), rho=0.5, perturb_mask=functools.partial(path_mask, regex=r'head/.*'))
  tx.update(grads, tx.init(params), params, grad_fn=grad_fn)
  np.testing.assert_array_equal(seen[0]['backbone']['w'], params['backbone']['w'])
  np.testing.assert_allclose(seen[0]['head']['kernel'], [3.3, -0.6], rtol=1e-6)


def test_adaptive_sam_matches_formula():
  lr, rho = 0.1, 0.5
  theta, g = THETA0, A @ THETA0 + B
  t = np.abs(theta)
  e_expected = rho * t ** 2 * g / np.linalg.norm(t * g)
  params = {'t': jnp.asarray(theta, jnp.float32)}
  e = sam_perturbation(quad_grad(params), params, rho, adaptive=True)
  np.testing.assert_allclose(e['t'], e_expected, rtol=1e-5)
  out, _ = run(sam(optax.sgd(lr), rho=rho, adaptive=True), quad_grad, 1)
  np.testing.assert_allclose(out[0], theta - lr * (A @ (theta + e_expected) + B), rtol=1e-5)


def test_sam_jits_with_a_traced_grad_fn():
  tx = sam(torch_sgd(0.05, momentum=0.9, weight_decay=1e-3), rho=0.1)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 3))
  y = jnp.sin(x @ jnp.array([1.0, -1.0, 0.5]))

  def step(params, state, x, y):
    loss_grad = jax.grad(lambda p, x, y: jnp.mean((x @ p['t'] - y) ** 2))
    grad_fn = lambda p: loss_grad(p, x, y)  # closes over the traced batch
    updates, state = tx.update(grad_fn(params), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  params = {'t': jnp.asarray(THETA0, jnp.float32)}
  state = tx.init(params)
  eager = step(params, state, x, y)
  jitted = jax.jit(step)(params, state, x, y)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7), eager, jitted)


def test_rho_schedule_is_evaluated_per_step():
  schedule = step_rho_schedule([5, 60, 75], [0.05, 0.1, 0.5, 0.5], steps_per_epoch=10)
  counts = jnp.array([0, 49, 50, 599, 600, 749, 750, 899])
  np.testing.assert_allclose(jax.vmap(schedule)(counts),
                             [0.05, 0.05, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5], rtol=1e-7)

  radii = []

  def grad_fn(p):
    radii.append(float(jnp.linalg.norm(p['t'] - params['t'])))
    return quad_grad(p)

  tx = sam(optax.sgd(0.0), rho=step_rho_schedule([1, 2], [0.0, 0.3, 0.7], steps_per_epoch=2))
  params = {'t': jnp.asarray(THETA0, jnp.float32)}
  state = tx.init(params)
  for _ in range(6):  # lr 0: params stay, so |e| = rho_t exactly
    _, state = tx.update(quad_grad(params), state, params, grad_fn=grad_fn)
  np.testing.assert_allclose(radii, [0.0, 0.0, 0.3, 0.3, 0.7, 0.7], rtol=1e-5, atol=1e-7)


def test_sam_validates_arguments():
  with pytest.raises(ValueError, match='rho'):
    sam(optax.sgd(0.1), rho=-0.1)
  with pytest.raises(TypeError):
    sam(lambda g: g, rho=0.1)
  with pytest.raises(ValueError, match='values'):
    step_rho_schedule([5, 60], [0.1], steps_per_epoch=10)
  with pytest.raises(ValueError, match='increasing'):
    step_rho_schedule([60, 5], [0.1, 0.2, 0.3], steps_per_epoch=10)
  tx = sam(optax.sgd(0.1), rho=0.1)
  params = {'t': jnp.ones(3)}
  with pytest.raises(ValueError, match='grad_fn'):
    tx.update(params, tx.init(params), params)
  with pytest.raises(ValueError, match='parameters'):
    tx.update(params, tx.init(params), grad_fn=quad_grad)


# ------------------------------------------------------------------------- MaxNorm


def head_params(column_norms, d=4, seed=0):
  """{'backbone': ..., 'head': {'kernel': (d, C) with the given column norms, 'bias'}}."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  w = jax.random.normal(k1, (d, len(column_norms)))
  w = w / jnp.linalg.norm(w, axis=0) * jnp.asarray(column_norms)
  return {'backbone': {'w': jax.random.normal(k2, (3,))},
          'head': {'kernel': w, 'bias': jnp.full((len(column_norms),), 5.0)}}


def test_max_norm_thresholds_formula():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  np.testing.assert_allclose(max_norm_thresholds(params['head']['kernel']), 1.0 + 0.1 * 4.0,
                             rtol=1e-6)
  np.testing.assert_allclose(max_norm_thresholds(params['head']['kernel'], thresh=0.5), 3.0,
                             rtol=1e-6)
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
      norms * np.linalg.norm(unprojected, axis=0))
  np.testing.assert_allclose(cosine, 1.0, rtol=1e-6)
  # Column 0 is inside the ball, bias and backbone unconstrained: updates bitwise kept.
  np.testing.assert_array_equal(out['head']['kernel'][:, 0], updates['head']['kernel'][:, 0])
  np.testing.assert_array_equal(out['head']['bias'], updates['head']['bias'])
  np.testing.assert_array_equal(out['backbone']['w'], updates['backbone']['w'])


def test_max_norm_is_an_exact_noop_inside_the_ball():
  params = head_params([0.5, 0.7, 0.9])
  tx = projected_max_norm({'backbone': {'w': None},
                           'head': {'kernel': jnp.array([1.0, 1.0, 2.0]), 'bias': float('inf')}})
  updates = jax.tree.map(lambda p: 1e-3 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
  out, _ = jax.jit(tx.update)(updates, tx.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, out, updates)


def test_max_norm_per_class_thresholds_and_chain():
  params = head_params([1.0, 2.0, 3.0])
  taus = jnp.array([0.5, 2.5, 1.0])
  tx = optax.chain(torch_sgd(0.1, momentum=0.9, weight_decay=0.01),
                   projected_max_norm({'backbone': {'w': None},
                                       'head': {'kernel': taus, 'bias': None}}))
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
    projected_max_norm({'backbone': {'w': None},
                        'head': {'kernel': jnp.ones(5), 'bias': None}}).init(params)
  with pytest.raises(ValueError, match='positive'):
    projected_max_norm({'head': {'kernel': -1.0}})
  with pytest.raises(ValueError, match='every_n_steps'):
    projected_max_norm(head_max_norm(params), every_n_steps=0)


def test_sam_around_sgd_and_max_norm():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  tx = sam(optax.chain(torch_sgd(0.1, momentum=0.9, weight_decay=0.1),
                       projected_max_norm(head_max_norm(params))), rho=0.05)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
  labels = jnp.arange(8) % 4
  loss_grad = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
      x @ p['head']['kernel'] + p['head']['bias'] + jnp.sum(p['backbone']['w']), labels).mean())
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(loss_grad(params), state, params, grad_fn=loss_grad)
    params = optax.apply_updates(params, updates)
  assert np.all(np.linalg.norm(params['head']['kernel'], axis=0) <= 1.4 * (1 + 1e-6))


# -------------------------------------------------------------------------- groups


def model_params():
  return {'backbone': {'conv': {'kernel': jnp.ones((3, 3, 2, 4))}, 'bn': {'scale': jnp.ones(4)}},
          'head': {'kernel': jnp.ones((4, 5)), 'bias': jnp.zeros(5)}}


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
  tx = freeze(optax.chain(torch_sgd(0.1, momentum=0.9, weight_decay=0.1),
                          projected_max_norm(head_max_norm(params))), r'head/.*')
  state, new = tx.init(params), params
  grads = jax.tree.map(lambda p: -jnp.ones_like(p), params)
  for _ in range(2):
    updates, state = tx.update(grads, state, new)
    new = optax.apply_updates(new, updates)
  assert np.all(np.linalg.norm(new['head']['kernel'], axis=0) <= 1.4 * (1 + 1e-6))
  np.testing.assert_array_equal(new['backbone']['w'], params['backbone']['w'])
