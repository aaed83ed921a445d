"""Tests for ltjax.optim.sgd: torch_sgd against PyTorch's recorded sequence; decay masks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax import optim
from ltjax import param_paths

A = np.array([1.0, 3.0])
B = np.array([0.5, -1.0])
LRS = [0.1, 0.1, 0.05, 0.05, 0.01]
# Parameters after each step of torch.optim.SGD(lr, momentum=0.9, weight_decay=0.01)
# on f(t) = sum(A t^2) / 2 + B.t from t = (1, -2) with the learning rates LRS,
# recorded from PyTorch 2.13 in float64.
TORCH_SEQUENCE = {
    False: [
        [0.849, -1.298],
        [0.577351, -0.175502],
        [0.4009527245, 0.406035151],
        [0.196946163963, 0.918310296674],
        [0.15323582681, 0.992878682966],
    ],
    True: [
        [0.7131, -0.6662],
        [0.35894611, 0.47341978],
        [0.172546375245, 0.810637504909],
        [-0.020455110039, 0.996456371999],
        [-0.058234397277, 1.004876598169],
    ],
}


def numpy_torch_sgd(nesterov):
  """PyTorch's documented SGD algorithm, written out independently."""
  theta, buf, out = np.array([1.0, -2.0]), None, []
  for lr in LRS:
    g = A * theta + B + 0.01 * theta
    buf = g.copy() if buf is None else 0.9 * buf + g
    theta = theta - lr * (g + 0.9 * buf if nesterov else buf)
    out.append(theta.copy())
  return np.array(out)


@pytest.mark.parametrize('nesterov', [False, True])
def test_torch_sgd_reproduces_pytorch(nesterov):
  jax.config.update('jax_enable_x64', True)
  try:
    schedule = lambda count: jnp.asarray(LRS, jnp.float64)[count]
    tx = optim.torch_sgd(schedule, momentum=0.9, nesterov=nesterov, weight_decay=0.01)
    params = {'t': jnp.array([1.0, -2.0], jnp.float64)}
    opt_state = tx.init(params)
    grad_fn = jax.grad(lambda p: 0.5 * jnp.sum(A * p['t'] ** 2) + jnp.dot(B, p['t']))
    sequence = []
    for _ in LRS:
      updates, opt_state = tx.update(grad_fn(params), opt_state, params)
      params = optax.apply_updates(params, updates)
      sequence.append(np.asarray(params['t']))
  finally:
    jax.config.update('jax_enable_x64', False)
  np.testing.assert_allclose(sequence, TORCH_SEQUENCE[nesterov], rtol=0, atol=1e-11)
  np.testing.assert_allclose(
      numpy_torch_sgd(nesterov), TORCH_SEQUENCE[nesterov], rtol=0, atol=1e-11
  )


def test_weight_decay_mask_selects_paths():
  params = {
      'backbone': {'conv': {'kernel': jnp.ones(2)}, 'bn': {'scale': jnp.ones(2)}},
      'head': {'kernel': jnp.ones(2), 'bias': jnp.ones(2)},
  }
  mask = param_paths.path_mask(params, r'.*/kernel')
  assert mask == {
      'backbone': {'conv': {'kernel': True}, 'bn': {'scale': False}},
      'head': {'kernel': True, 'bias': False},
  }
  tx = optim.torch_sgd(1.0, momentum=0.0, weight_decay=0.5, weight_decay_mask=mask)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates['head']['kernel'], -0.5)
  np.testing.assert_allclose(updates['head']['bias'], 0.0)
  np.testing.assert_allclose(updates['backbone']['bn']['scale'], 0.0)
