"""Tests for ltjax.models.heads: every classifier head against numpy formulas."""

# Heads are checked against numpy formulas (cosines, LWS, tau-norm) and the
# simplex-ETF's defining Gram matrix.

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from ltjax import models
from ltjax.models import heads
from ltjax.train import config_check

D, C, B = 12, 5, 7


def _features(seed=0, batch=B, dim=D):
  return jax.random.normal(jax.random.key(seed), (batch, dim))


def _numpy_cosines(f, kernel):
  f = np.asarray(f, np.float64)
  k = np.asarray(kernel, np.float64)
  return (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (
      k / np.linalg.norm(k, axis=0, keepdims=True)
  )


# ----------------------------------------------------------------- ETF


@pytest.mark.parametrize('dim,num_classes', [(12, 5), (7, 7), (64, 10)])
def test_etf_gram_norms_and_cosines(dim, num_classes):
  w = heads.etf_kernel(dim, num_classes, seed=3).astype(np.float64)
  assert w.shape == (dim, num_classes)
  gram = w.T @ w  # Gram of the class vectors (columns)
  ones = np.ones((num_classes, num_classes))
  expected = num_classes / (num_classes - 1) * (np.eye(num_classes) - ones / num_classes)
  np.testing.assert_allclose(gram, expected, atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, atol=1e-6)
  off_diagonal = gram[~np.eye(num_classes, dtype=bool)]
  np.testing.assert_allclose(off_diagonal, -1.0 / (num_classes - 1), atol=1e-6)
  np.testing.assert_allclose(w.sum(axis=1), 0.0, atol=1e-6)  # centred simplex


def test_etf_is_pinned_function_of_seed():
  # A checkpoint of an ETF model stores no W: it must be reproducible from
  # (d, C, seed) forever. A change of numpy's generator would break this.
  w = heads.etf_kernel(6, 4, seed=0)
  np.testing.assert_allclose(
      w[:2],
      [
          [0.03810983, -0.11375377, 0.33705607, -0.26141214],
          [-0.48874983, 0.03491625, 0.6755651, -0.22173153],
      ],
      atol=1e-6,
  )
  assert not np.allclose(heads.etf_kernel(6, 4, seed=1), w)


def test_etf_head_fixed_matrix_not_in_params():
  f = _features()
  head = heads.ETFHead(num_classes=C, seed=5)
  v1 = head.init(jax.random.key(0), f)
  v2 = head.init(jax.random.key(1), f)
  assert set(v1) == {'params'} and set(v1['params']) == {'bias'}
  bias = np.asarray(v1['params']['bias'])
  assert np.all(np.abs(bias) <= 1.0 / D) and not np.allclose(bias, v2['params']['bias'])
  w = heads.etf_kernel(D, C, seed=5)
  for v in (v1, v2):  # same W whatever the init key
    np.testing.assert_allclose(head.apply(v, f), f @ w + v['params']['bias'], rtol=1e-5, atol=1e-6)
  jitted = jax.jit(head.apply)(v1, f)
  np.testing.assert_allclose(jitted, head.apply(v1, f), rtol=1e-6, atol=1e-6)
  # Gradients reach the bias only.
  grads = jax.grad(lambda p: head.apply({'params': p}, f).sum())(v1['params'])
  np.testing.assert_allclose(grads['bias'], B)


def test_etf_train_norm():
  f = _features()
  head = heads.ETFHead(num_classes=C, train_norm=True)
  v = head.init(jax.random.key(0), f)
  assert set(v['params']) == {'bias', 'norm'}
  np.testing.assert_array_equal(v['params']['norm'], np.ones(C))
  norm = jnp.arange(1.0, C + 1.0)
  params = {'bias': v['params']['bias'], 'norm': norm}
  w = heads.etf_kernel(D, C)
  np.testing.assert_allclose(
      head.apply({'params': params}, f), (f @ w) * norm + params['bias'], rtol=1e-5, atol=1e-5
  )


def test_etf_needs_d_at_least_c():
  with pytest.raises(ValueError, match='d=4, C=5'):
    heads.etf_kernel(4, 5)
  with pytest.raises(ValueError, match='d >= num_classes'):
    heads.ETFHead(num_classes=C).init(jax.random.key(0), jnp.ones((2, C - 1)))


# ----------------------------------------------------------------- cosine, LWS, tau-norm


def test_cosine_head_equals_numpy_cosines():
  f = _features() * 10.0
  head = heads.CosineHead(num_classes=C)
  v = head.init(jax.random.key(0), f)
  assert set(v['params']) == {'kernel'}
  kernel = np.asarray(v['params']['kernel'])
  # LDAM's init: U(-1, 1) renormed to unit columns.
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, atol=1e-6)
  logits = np.asarray(head.apply(v, f))
  assert logits.dtype == np.float32
  assert np.all(logits <= 1.0 + 1e-6) and np.all(logits >= -1.0 - 1e-6)
  # Against a kernel that is not unit-norm.
  kernel2 = 3.0 * np.asarray(jax.random.normal(jax.random.key(2), (D, C)))
  np.testing.assert_allclose(
      head.apply({'params': {'kernel': kernel2}}, f), _numpy_cosines(f, kernel2), atol=1e-6
  )
  # Fixed and learned scale.
  fixed = heads.CosineHead(num_classes=C, scale=30.0)
  np.testing.assert_allclose(fixed.apply(v, f), 30.0 * logits, rtol=1e-6, atol=1e-5)
  learned = heads.CosineHead(num_classes=C, scale=16.0, learn_scale=True)
  vl = learned.init(jax.random.key(0), f)
  assert vl['params']['scale'].shape == () and float(vl['params']['scale']) == 16.0
  np.testing.assert_allclose(learned.apply(vl, f), 16.0 * logits, rtol=1e-6, atol=1e-5)


def test_lws_with_unit_scale_is_linear():
  f = _features()
  linear = heads.LinearHead(num_classes=C)
  lv = linear.init(jax.random.key(0), f)
  lws = heads.LWSHead(num_classes=C)
  sv = lws.init(jax.random.key(0), f)
  assert set(sv['params']) == {'kernel', 'bias', 'scale'}
  np.testing.assert_array_equal(sv['params']['scale'], np.ones(C))
  # Stage 2 loads the stage-1 linear parameters and adds the scale.
  params = {**lv['params'], 'scale': sv['params']['scale']}
  np.testing.assert_allclose(
      lws.apply({'params': params}, f), linear.apply(lv, f), rtol=1e-6, atol=1e-6
  )
  scale = jnp.linspace(0.5, 2.0, C)
  np.testing.assert_allclose(
      lws.apply({'params': {**params, 'scale': scale}}, f),
      linear.apply(lv, f) * scale,
      rtol=1e-5,
      atol=1e-6,
  )


def test_tau_norm_head():
  f = _features()
  linear = heads.LinearHead(num_classes=C)
  v = linear.init(jax.random.key(0), f)
  kernel = np.asarray(v['params']['kernel'], np.float64)
  bias = np.asarray(v['params']['bias'])
  # tau = 0 is the linear head; the linear checkpoint is used as is.
  np.testing.assert_allclose(
      heads.TauNormHead(num_classes=C, tau=0.0).apply(v, f),
      linear.apply(v, f),
      rtol=1e-6,
      atol=1e-6,
  )
  # tau = 1 normalises the class vectors.
  np.testing.assert_allclose(
      np.linalg.norm(heads.tau_normalize(kernel, 1.0), axis=0), 1.0, atol=1e-6
  )
  np.testing.assert_allclose(
      heads.TauNormHead(num_classes=C, tau=1.0).apply(v, f),
      f @ (kernel / np.linalg.norm(kernel, axis=0)) + bias,
      rtol=1e-5,
      atol=1e-5,
  )
  # General tau against numpy.
  norms = np.linalg.norm(kernel, axis=0)
  np.testing.assert_allclose(
      heads.tau_normalize(kernel, 0.7), kernel / norms**0.7, rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(
      heads.TauNormHead(num_classes=C, tau=1.9).apply(v, f),
      f @ (kernel / norms**1.9) + bias,
      rtol=1e-4,
      atol=1e-5,
  )


# ----------------------------------------------------------------- LWR projection


def test_projection_mlp_shapes_and_pure_function():
  rows = jax.random.normal(jax.random.key(0), (C, D))
  mlp = heads.ProjectionMLP()
  v = mlp.init(jax.random.key(1), rows)
  shapes = jax.tree.map(lambda a: a.shape, v['params'])
  assert shapes == {
      'hidden': {'kernel': (D, D), 'bias': (D,)},
      'output': {'kernel': (D, D), 'bias': (D,)},
  }
  out = mlp.apply(v, rows)
  chex.assert_shape(out, (C, D))
  p = jax.tree.map(np.asarray, v['params'])
  hidden = np.maximum(np.asarray(rows) @ p['hidden']['kernel'] + p['hidden']['bias'], 0)
  np.testing.assert_allclose(
      out, hidden @ p['output']['kernel'] + p['output']['bias'], rtol=1e-5, atol=1e-5
  )
  # On a (d, C) kernel: class vectors are its columns.
  np.testing.assert_allclose(heads.project_kernel(v['params'], rows.T), out, atol=1e-6)
  narrow = heads.ProjectionMLP(features=3).init(jax.random.key(1), rows)
  assert narrow['params']['hidden']['kernel'].shape == (D, D)
  assert heads.project_kernel(narrow['params'], rows.T).shape == (C, 3)


def test_lwr_head_is_linear_and_owns_projection():
  f = _features()
  head = heads.LWRHead(num_classes=C)
  v = head.init(jax.random.key(0), f)
  assert set(v['params']) == {'kernel', 'bias', 'projection'}
  linear_params = {k: v['params'][k] for k in ('kernel', 'bias')}
  np.testing.assert_allclose(
      head.apply(v, f), heads.LinearHead(C).apply({'params': linear_params}, f), atol=1e-6
  )
  projected = heads.lwr_projected_weights(v['params'])
  chex.assert_shape(projected, (C, D))
  # The regulariser's gradient reaches both the kernel and the MLP.
  grads = jax.grad(lambda p: jnp.sum(heads.lwr_projected_weights(p) ** 2))(v['params'])
  assert np.abs(grads['kernel']).sum() > 0
  assert np.abs(grads['projection']['hidden']['kernel']).sum() > 0
  np.testing.assert_array_equal(grads['bias'], 0.0)


class _TinyBackbone(nn.Module):

  @nn.compact
  def __call__(self, x, *, train):
    del train
    return nn.Dense(D)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    'head,names',
    [
        (heads.CosineHead(C), {'kernel'}),
        (heads.LWSHead(C), {'kernel', 'bias', 'scale'}),
        (heads.TauNormHead(C), {'kernel', 'bias'}),
        (heads.ETFHead(C), {'bias'}),
        (heads.LWRHead(C), {'kernel', 'bias', 'projection'}),
    ],
)
def test_heads_in_classifier(head, names):
  model = models.Classifier(backbone=_TinyBackbone(), head=head)
  x = jnp.ones((3, 4, 4, 1))
  v = model.init(jax.random.key(0), x, train=False)
  assert set(v['params']['head']) == names
  logits, features = model.apply(v, x, train=False)
  chex.assert_shape([logits, features], [(3, C), (3, D)])
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize('head', sorted(models.HEADS))
def test_every_head_builds_from_the_config(head):
  config = base.get_config().model
  config.head = head
  model = models.build_model(config, 10)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)), train=False)
  )
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 28, 28, 1)), train=False), variables
  )
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert 'head' in variables['params']


# ----------------------------------------------------------------- model.head_init

# A large kernel so the sample moments pin the distribution: fan_in 512, 1000 classes.
FAN_IN, CLASSES = 512, 1000


def _head_params(head_init, head='linear', seed=0):
  config = base.get_config().model
  config.head, config.head_init = head, head_init
  module = models.build_model(config, CLASSES).head
  return module.init(jax.random.key(seed), jnp.zeros((1, FAN_IN)))['params']


def test_head_init_kaiming_normal_std_is_sqrt_two_over_fan_in():
  kernel = np.asarray(_head_params('kaiming_normal')['kernel'], np.float64)
  assert kernel.shape == (FAN_IN, CLASSES)
  n = kernel.size
  std = np.sqrt(2.0 / FAN_IN)  # fan_in = the Linear's in_features, not the class count
  # Std within ~10 standard errors (se of a sample std ~ std / sqrt(2n)); mean within 5.
  np.testing.assert_allclose(kernel.std(), std, rtol=10 / np.sqrt(2 * n))
  assert abs(kernel.mean()) < 5 * std / np.sqrt(n)
  # Untruncated normal (PyTorch's kaiming_normal_; flax's kaiming_normal truncates at 2 std):
  # P(|x| > 2 std) = 4.55%.
  np.testing.assert_allclose(np.mean(np.abs(kernel) > 2 * std), 0.0455, atol=0.002)


def test_head_init_torch_is_uniform_in_one_over_sqrt_fan_in():
  kernel = np.asarray(_head_params('torch')['kernel'], np.float64)
  bound = 1.0 / np.sqrt(FAN_IN)
  assert np.all(np.abs(kernel) <= bound)
  assert np.abs(kernel).max() > 0.999 * bound
  np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3.0), rtol=0.01)
  assert abs(kernel.mean()) < 5 * bound / np.sqrt(3.0 * kernel.size)
  # The module default is the config default.
  direct = heads.LinearHead(CLASSES).init(jax.random.key(0), jnp.zeros((1, FAN_IN)))
  np.testing.assert_array_equal(direct['params']['kernel'], kernel.astype(np.float32))


@pytest.mark.parametrize('head', models.HEAD_INIT_HEADS)
def test_head_init_sets_the_kernel_and_leaves_the_bias(head):
  torch_params = _head_params('torch', head)
  kaiming_params = _head_params('kaiming_normal', head)
  # Bias: PyTorch's default under both (LDAM-DRW re-initialises only the weight).
  np.testing.assert_array_equal(torch_params['bias'], kaiming_params['bias'])
  assert np.all(np.abs(np.asarray(kaiming_params['bias'])) <= 1.0 / np.sqrt(FAN_IN))
  assert not np.array_equal(torch_params['kernel'], kaiming_params['kernel'])
  # The heads sharing LinearHead's parameters start from its very kernel.
  np.testing.assert_array_equal(
      kaiming_params['kernel'], _head_params('kaiming_normal', 'linear')['kernel']
  )
  if head == 'lwr':  # the projection MLP is not the classifier: PyTorch's default always
    chex.assert_trees_all_equal(torch_params['projection'], kaiming_params['projection'])


@pytest.mark.parametrize('head', sorted(set(models.HEADS) - set(models.HEAD_INIT_HEADS)))
def test_head_init_refused_for_heads_with_their_own_init(head):
  config = base.get_config().model
  config.head, config.head_init = head, 'kaiming_normal'
  with pytest.raises(ValueError, match="leave model.head_init='torch'"):
    models.build_model(config, 10)
  config.head_init = 'torch'  # the default stays valid (LDAM recipes use 'cosine')
  models.build_model(config, 10)


def test_head_init_unknown_name_is_refused():
  config = base.get_config()
  config.model.head_init = 'kaiming_uniform'
  with pytest.raises(ValueError, match='head_init'):
    models.build_model(config.model, 10)
  with pytest.raises(ValueError, match='model.head_init'):
    config_check.check_names(config)
  with pytest.raises(ValueError, match='head_init'):
    heads.LinearHead(C, head_init='kaiming_uniform').init(jax.random.key(0), _features())
