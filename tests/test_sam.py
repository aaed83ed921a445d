"""Tests for ltjax.optim.sam: SAM and ASAM against analytic steps and the PyTorch sequence."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import head_params
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sam import sam
from ltjax.optim.sam import sam_perturbation
from ltjax.optim.sam import step_rho_schedule
from ltjax.optim.sgd import torch_sgd
from ltjax.param_paths import path_mask

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
  np.testing.assert_allclose(
      out[0], THETA0 - lr * A @ (THETA0 + rho * at / np.linalg.norm(at)), rtol=1e-6, atol=1e-6
  )


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
  for mask in (
      {'backbone': False, 'head': True},  # a prefix mask
      functools.partial(path_mask, regex=r'head/.*'),
  ):
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
  e_expected = rho * t**2 * g / np.linalg.norm(t * g)
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
  chex.assert_trees_all_close(eager, jitted, rtol=1e-6, atol=1e-7)


def test_rho_schedule_is_evaluated_per_step():
  schedule = step_rho_schedule([5, 60, 75], [0.05, 0.1, 0.5, 0.5], steps_per_epoch=10)
  counts = jnp.array([0, 49, 50, 599, 600, 749, 750, 899])
  np.testing.assert_allclose(
      jax.vmap(schedule)(counts), [0.05, 0.05, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5], rtol=1e-7
  )

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


def test_sam_around_sgd_and_max_norm():
  params = head_params([1.0, 3.0, 2.0, 5.0])
  tx = sam(
      optax.chain(
          torch_sgd(0.1, momentum=0.9, weight_decay=0.1), projected_max_norm(head_max_norm(params))
      ),
      rho=0.05,
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 4))
  labels = jnp.arange(8) % 4
  loss_grad = jax.grad(
      lambda p: optax.softmax_cross_entropy_with_integer_labels(
          x @ p['head']['kernel'] + p['head']['bias'] + jnp.sum(p['backbone']['w']), labels
      ).mean()
  )
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(loss_grad(params), state, params, grad_fn=loss_grad)
    params = optax.apply_updates(params, updates)
  assert np.all(np.linalg.norm(params['head']['kernel'], axis=0) <= 1.4 * (1 + 1e-6))
