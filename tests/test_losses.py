"""Tests for ltjax.losses' loss functions, regularisers and schedules against numpy formulas."""

# The modules cross_entropy, focal, class_balanced, logit_adjusted, retargeting,
# regularizers and schedules share one set of numpy references and cases, so
# they share this file (mixup, cc_sam, adversarial and objective have their own).
# The loss zoo against independent numpy formulas, finite differences and each
# other. The numpy references below are written from the papers' formulas in
# float64 (not by calling ltjax), with the naive-but-exact forms (e.g. 1 - p_c
# as the sum of the other probabilities) so that they stay accurate at logits
# of +-80.

import functools

from absl.testing import parameterized
import chex
import hypothesis
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax.losses.class_balanced import class_balanced_loss
from ltjax.losses.class_balanced import effective_number_weights
from ltjax.losses.cross_entropy import softmax_cross_entropy
from ltjax.losses.dot_regression import dot_regression_loss
from ltjax.losses.focal import focal_loss
from ltjax.losses.logit_adjusted import balanced_softmax_loss
from ltjax.losses.logit_adjusted import ldam_loss
from ltjax.losses.logit_adjusted import logit_adjusted_loss
from ltjax.losses.logit_adjusted import vs_loss
from ltjax.losses.regularizers import feature_norm_regularizer
from ltjax.losses.regularizers import lwr_regularizer
from ltjax.losses.retargeting import lort_loss
from ltjax.losses.schedules import adrw_weights
from ltjax.losses.schedules import drw_weights
from ltjax.losses.schedules import lwr_lambda
from ltjax.losses.schedules import tla_gamma

# ---------------------------------------------------------------------------
# numpy references (float64, from the formulas)
# ---------------------------------------------------------------------------


def np_softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_one_minus_softmax(z):
  """1 - p_c as the sum of the other classes' probabilities (exact in the tails)."""
  p = np_softmax(z)
  return np.stack([np.delete(p, c, axis=-1).sum(-1) for c in range(p.shape[-1])], axis=-1)


def np_reduce(per, w, reduction):
  """per already includes w[y]; 'mean' is PyTorch's weighted mean."""
  if reduction == 'none':
    return per
  if reduction == 'sum':
    return per.sum()
  return per.sum() / (w.sum() if w is not None else len(per))


def np_ce(z, y, w=None, ls=0.0, reduction='none'):
  c = z.shape[-1]
  target = np.eye(c)[y] * (1 - ls) + ls / c
  per = -(target * np_log_softmax(z)).sum(-1)
  wi = None if w is None else np.asarray(w, np.float64)[y]
  if wi is not None:
    per = per * wi
  return np_reduce(per, wi, reduction)


def np_focal(z, y, gamma, w=None, reduction='none'):
  one_minus = np_one_minus_softmax(z)[np.arange(len(y)), y]
  per = -(one_minus**gamma) * np_log_softmax(z)[np.arange(len(y)), y]
  wi = None if w is None else np.asarray(w, np.float64)[y]
  if wi is not None:
    per = per * wi
  return np_reduce(per, wi, reduction)


def np_focal_ldam_code(z, y, gamma, w, reduction):
  """DDC/LDAM-DRW losses.py FocalLoss: l = w_y CE, p = exp(-l), mean((1-p)^g l)."""
  l = np_ce(z, y, w)
  per = (1 - np.exp(-l)) ** gamma * l
  return per if reduction == 'none' else (per.mean() if reduction == 'mean' else per.sum())


def np_cb_weights(n, beta):
  n = np.asarray(n, np.float64)
  w = 1.0 / n if beta == 1 else (1 - beta) / (1 - np.power(beta, n))
  return w / w.sum() * len(n)


def np_bce_logits(z, t):
  return np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))


def np_cb(z, y, n, beta, variant, gamma, reduction):
  """PyTorch's weighted mean for 'mean' ('weight_sum'); np_cb_official has the 'batch' form."""
  z = np.asarray(z, np.float64)
  c = z.shape[-1]
  t = np.eye(c)[y]
  w = np_cb_weights(n, beta)[y]
  if variant == 'softmax':
    per = -(t * np_log_softmax(z)).sum(-1)
  elif variant == 'sigmoid':
    per = np_bce_logits(z, t).sum(-1)
  elif variant == 'focal':
    p = 1 / (1 + np.exp(-z))
    p_t = t * p + (1 - t) * (1 - p)
    per = ((1 - p_t) ** gamma * np_bce_logits(z, t)).sum(-1)
  else:  # softmax_bce: BCE(softmax, onehot), mean over classes.
    bce = -(t * np_log_softmax(z) + (1 - t) * np.log(np_one_minus_softmax(z)))
    per = bce.mean(-1)
  return np_reduce(per * w, w, reduction)


def np_cb_official(z, y, n, beta, variant, gamma):
  """The batch mean of the official CB_loss, written as that code computes it.

  EWB utils/class_balanced_loss.py CB_loss + ``error.mean()``: 'softmax' (B,) w_i CE_i,
  'sigmoid' (B, C) w_i BCE_ic, 'focal' (B,) w_i sum_c FL_ic, each averaged over its entries.
  WB's 'softmax' (ltjax 'softmax_bce'): BCE(softmax, onehot, weight=w_i) over all B*C entries.
  """
  z = np.asarray(z, np.float64)
  t = np.eye(z.shape[-1])[y]
  w = np_cb_weights(n, beta)[y][:, None]  # Each sample's weight on its C entries.
  if variant == 'softmax':
    return (w[:, 0] * -(t * np_log_softmax(z)).sum(-1)).mean()
  if variant == 'sigmoid':
    return (w * np_bce_logits(z, t)).mean()
  if variant == 'focal':
    p = 1 / (1 + np.exp(-z))
    modulator = np.where(t == 1, 1 - p, p) ** gamma
    return (w * modulator * np_bce_logits(z, t)).sum() / t.sum()
  bce = -(t * np_log_softmax(z) + (1 - t) * np.log(np_one_minus_softmax(z)))
  return (w * bce).mean()


def np_dot_regression(z, y, f, m, w=None, reduction='none'):
  """(z_y - |f| |m_y|)^2 / (2 |f| |m_y|), times w_y; 'mean' is PyTorch's weighted mean."""
  z, f, m = (np.asarray(a, np.float64) for a in (z, f, m))
  s = np.linalg.norm(f, axis=1) * np.linalg.norm(m, axis=1)[y]
  per = (z[np.arange(len(y)), y] - s) ** 2 / (2 * s)
  wi = None if w is None else np.asarray(w, np.float64)[y]
  if wi is not None:
    per = per * wi
  return np_reduce(per, wi, reduction)


def np_ldam(z, y, n, max_m, s, w, reduction):
  m = np.asarray(n, np.float64) ** -0.25
  m = m * (max_m / m.max())
  z = np.asarray(z, np.float64).copy()
  z[np.arange(len(y)), y] -= m[y]
  return np_ce(s * z, y, w, reduction=reduction)


def np_log_prior(n):
  n = np.asarray(n, np.float64)
  return np.log(n / n.sum())


def np_vs_code(z, y, n, gamma, tau, w, reduction):
  """The VS-Loss/DDC code form: z / Delta + iota, Delta = (1/n)^g / min (1/n)^g."""
  n = np.asarray(n, np.float64)
  delta = (1.0 / n) ** gamma
  delta = delta / delta.min()
  return np_ce(np.asarray(z, np.float64) / delta + tau * np_log_prior(n), y, w, reduction=reduction)


def np_lwr(w, theta, tau):
  w = np.asarray(w, np.float64)
  u = w / np.linalg.norm(w, axis=1, keepdims=True)
  cos = u @ u.T
  np.fill_diagonal(cos, 1.0)
  s = np.where(cos > theta, cos, 0.0) / tau
  return sum(-(s[i, i] - np.log(np.exp(s[i]).sum())) for i in range(len(w)))


def np_lwr_grad_eq4(w, theta, tau):
  """grad_{w_i} R = sum_{j != i} C_ij (u_j - cos_ij u_i) / ||w_i||, C_ij = 1[.](p_ij + p_ji)/tau."""
  w = np.asarray(w, np.float64)
  norms = np.linalg.norm(w, axis=1)
  u = w / norms[:, None]
  cos = u @ u.T
  np.fill_diagonal(cos, 1.0)
  ind = cos > theta
  s = np.where(ind, cos, 0.0) / tau
  p = np.exp(s - s.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  grad = np.zeros_like(w)
  for i in range(len(w)):
    for j in range(len(w)):
      if j != i:
        coeff = ind[i, j] * (p[i, j] + p[j, i]) / tau
        grad[i] += coeff * (u[j] - cos[i, j] * u[i]) / norms[i]
  return grad


# ---------------------------------------------------------------------------
# Cases: random, extreme (+-80), one-hot-like, single-class batch, absent
# classes, n_c = 1, C = 2.
# ---------------------------------------------------------------------------

COUNTS7 = np.array([500, 200, 80, 30, 10, 3, 1])


def _cases():
  """All cases have batch 8, so eager JAX compiles each op for two shapes only."""
  rng = np.random.default_rng(0)
  cases = {}
  cases['random'] = (rng.normal(0, 3, (8, 7)), rng.integers(0, 7, 8), COUNTS7)
  z = rng.normal(0, 3, (8, 7))
  z[0] = [80, -80, 0, 0, 0, 0, 0]
  z[1] = [-80, 80, -80, 80, -80, 80, -80]
  z[2] = [0, 0, 0, 0, 0, 0, 80]
  z[3] = [-80] * 7
  z[4] = [50, 0, 0, 0, 0, 0, 0]  # One-hot-like.
  z[5] = [0, 0, 0, 0, 0, 0, 50]
  cases['extreme'] = (z, np.array([0, 0, 6, 3, 1, 6, 2, 5]), COUNTS7)
  cases['single_class'] = (rng.normal(0, 3, (8, 7)), np.full(8, 6), COUNTS7)
  cases['absent_classes'] = (rng.normal(0, 3, (8, 7)), np.array([0, 1, 1, 0, 1, 0, 0, 1]), COUNTS7)
  z = rng.normal(0, 3, (8, 2))
  z[0] = [80, -80]
  z[1] = [-80, 80]
  cases['two_classes'] = (z, np.array([1, 0, 1, 1, 0, 1, 1, 1]), np.array([1000, 1]))
  return cases


CASES = _cases()

# name -> (library call, numpy reference, scale of the effective logits).
# Each takes (z, y, n, w, reduction); w are optional class weights.
LOSSES = {
    'focal_g2': (
        lambda z, y, n, w, r: focal_loss(z, y, gamma=2.0, class_weights=w, reduction=r),
        lambda z, y, n, w, r: np_focal(z, y, 2.0, w, r),
        1,
    ),
    'focal_g05': (
        lambda z, y, n, w, r: focal_loss(z, y, gamma=0.5, class_weights=w, reduction=r),
        lambda z, y, n, w, r: np_focal(z, y, 0.5, w, r),
        1,
    ),
    'focal_ldam_code': (
        lambda z, y, n, w, r: focal_loss(
            z, y, gamma=1.0, class_weights=w, reduction=r, convention='ldam_code'
        ),
        lambda z, y, n, w, r: np_focal_ldam_code(z, y, 1.0, w, r),
        1,
    ),
    'balanced_softmax': (
        lambda z, y, n, w, r: balanced_softmax_loss(
            z, y, class_counts=n, class_weights=w, reduction=r
        ),
        lambda z, y, n, w, r: np_ce(z + np.log(n), y, w, reduction=r),
        1,
    ),
    'logit_adjusted': (
        lambda z, y, n, w, r: logit_adjusted_loss(
            z, y, class_counts=n, tau=1.5, class_weights=w, reduction=r
        ),
        lambda z, y, n, w, r: np_ce(z + 1.5 * np_log_prior(n), y, w, reduction=r),
        1,
    ),
    'vs': (
        lambda z, y, n, w, r: vs_loss(
            z, y, class_counts=n, gamma=0.3, tau=1.2, class_weights=w, reduction=r
        ),
        lambda z, y, n, w, r: np_vs_code(z, y, n, 0.3, 1.2, w, r),
        1,
    ),
    'ldam': (
        lambda z, y, n, w, r: ldam_loss(z, y, class_counts=n, class_weights=w, reduction=r),
        lambda z, y, n, w, r: np_ldam(z, y, n, 0.5, 30.0, w, r),
        30,
    ),
    'lort': (
        lambda z, y, n, w, r: lort_loss(z, y, delta=0.98, reduction=r),
        lambda z, y, n, w, r: np_ce(z, y, None, ls=0.98, reduction=r),
        1,
    ),
}
for _variant in ('softmax', 'sigmoid', 'focal', 'softmax_bce'):
  LOSSES[f'cb_{_variant}'] = (
      functools.partial(
          lambda z, y, n, w, r, v: class_balanced_loss(
              z, y, class_counts=n, beta=0.9999, variant=v, gamma=2.0, reduction=r
          ),
          v=_variant,
      ),
      functools.partial(lambda z, y, n, w, r, v: np_cb(z, y, n, 0.9999, v, 2.0, r), v=_variant),
      1,
  )

UNWEIGHTED = ('lort',) + tuple(k for k in LOSSES if k.startswith('cb_'))


class CrossEntropyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(ls=(0.0, 0.1, 0.98), weighted=(False, True))
  def test_cross_entropy_against_numpy(self, ls, weighted):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 5, (16, 7)).astype(np.float32)
    logits[0] = [80, -80, 0, 0, 0, 0, 0]  # Extreme logits stay finite.
    labels = rng.integers(0, 7, 16)
    weights = rng.uniform(0.1, 3, 7) if weighted else None
    ce = self.variant(
        lambda z, y, w, reduction: softmax_cross_entropy(
            z, y, label_smoothing=ls, class_weights=w, reduction=reduction
        ),
        static_argnums=3,
    )
    np.testing.assert_allclose(
        ce(logits, labels, weights, 'none'),
        np_ce(logits, labels, weights, ls),
        rtol=1e-5,
        atol=1e-5,
    )
    # PyTorch's weighted mean: sum_i w_yi l_i / sum_i w_yi.
    np.testing.assert_allclose(
        ce(logits, labels, weights, 'mean'),
        np_ce(logits, labels, weights, ls, reduction='mean'),
        rtol=1e-5,
    )


def test_cross_entropy_gradient_is_softmax_minus_target():
  logits = jnp.array([[1.0, 2.0, -1.0]])
  grad = jax.grad(lambda z: softmax_cross_entropy(z, jnp.array([2]), reduction='sum'))(logits)
  np.testing.assert_allclose(grad, jax.nn.softmax(logits) - jnp.array([[0, 0, 1.0]]), rtol=1e-6)


def _check_against_numpy(name, case, dtype, weighted, reduction):
  call, ref, logit_scale = LOSSES[name]
  z, y, n = CASES[case]
  rng = np.random.default_rng(1)
  w = rng.uniform(0.2, 3.0, z.shape[-1]) if weighted else None
  got = call(
      jnp.asarray(z, dtype),
      jnp.asarray(y),
      n,
      None if w is None else jnp.asarray(w, dtype),
      reduction,
  )
  want = ref(z, y, n, w, reduction)
  assert got.dtype == dtype
  assert np.all(np.isfinite(np.asarray(got)))
  if dtype == jnp.float64:
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
  else:
    # float32: relative 1e-5, plus rounding of the largest (scaled) logits.
    atol = 1e-5 * max(1.0, logit_scale * np.abs(z).max() / 10)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=atol)


@pytest.mark.parametrize('reduction', ['none', 'mean'])
@pytest.mark.parametrize('case', list(CASES))
@pytest.mark.parametrize('name', list(LOSSES))
def test_loss_against_numpy_float32(name, case, reduction):
  _check_against_numpy(
      name, case, jnp.float32, weighted=name not in UNWEIGHTED, reduction=reduction
  )


@pytest.mark.parametrize('name', list(LOSSES))
def test_loss_against_numpy_float64(x64, name):
  del x64
  for case in CASES:
    for reduction in ('none', 'mean', 'sum'):
      _check_against_numpy(
          name, case, jnp.float64, weighted=name not in UNWEIGHTED, reduction=reduction
      )
    if name not in UNWEIGHTED:  # Unweighted path too.
      _check_against_numpy(name, case, jnp.float64, weighted=False, reduction='mean')


# ---------------------------------------------------------------------------
# Conventions
# ---------------------------------------------------------------------------


def test_low_precision_logits_are_computed_in_float32():
  z, y, n = CASES['extreme']
  for name, (call, ref, _) in LOSSES.items():
    got = call(jnp.asarray(z, jnp.bfloat16), jnp.asarray(y), n, None, 'mean')
    assert got.dtype == jnp.float32, name
    want = ref(np.asarray(jnp.asarray(z, jnp.bfloat16), np.float64), y, n, None, 'mean')
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3, err_msg=name)


def test_weighted_mean_is_pytorch_convention():
  z, y, n = CASES['random']
  w = np.linspace(0.5, 2.0, 7)
  per = focal_loss(z, y, gamma=2.0, class_weights=w)
  mean = focal_loss(z, y, gamma=2.0, class_weights=w, reduction='mean')
  np.testing.assert_allclose(mean, per.sum() / w[y].sum(), rtol=1e-6)


def test_focal_conventions_agree_without_weights_and_gamma0_is_ce():
  z, y, _ = CASES['extreme']
  a = focal_loss(z, y, gamma=1.5, reduction='none')
  b = focal_loss(z, y, gamma=1.5, reduction='none', convention='ldam_code')
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      focal_loss(z, y, gamma=0.0, reduction='mean'),
      softmax_cross_entropy(z, y, reduction='mean'),
      rtol=1e-6,
  )


@pytest.mark.parametrize('variant', ['softmax', 'sigmoid', 'focal', 'softmax_bce'])
def test_class_balanced_weighted_reductions(x64, variant):
  del x64
  z, y, n = CASES['random']
  w = np_cb_weights(n, 0.9999)[y]
  per = np_cb(z, y, n, 0.9999, variant, 2.0, 'none')  # w_i l_i.
  mean = lambda r: float(
      class_balanced_loss(
          z, y, class_counts=n, variant=variant, reduction='mean', weighted_reduction=r
      )
  )
  # 'weight_sum': PyTorch's sum_i w_i l_i / sum_i w_i.
  np.testing.assert_allclose(mean('weight_sum'), per.sum() / w.sum(), rtol=1e-12)
  # 'batch': what the official CB_loss computes, written independently.
  np.testing.assert_allclose(
      mean('batch'), np_cb_official(z, y, n, 0.9999, variant, 2.0), rtol=1e-12
  )
  # The two differ by sum_i w_i / B (EWB's sigmoid averages over the B * C entries).
  entries = len(y) * (z.shape[-1] if variant == 'sigmoid' else 1)
  np.testing.assert_allclose(mean('batch') / mean('weight_sum'), w.sum() / entries, rtol=1e-12)
  # 'none' and 'sum' are the same under both.
  for reduction in ('none', 'sum'):
    np.testing.assert_allclose(
        class_balanced_loss(z, y, class_counts=n, variant=variant, reduction=reduction),
        class_balanced_loss(
            z, y, class_counts=n, variant=variant, reduction=reduction, weighted_reduction='batch'
        ),
        rtol=1e-12,
    )


def test_class_balanced_softmax_is_weighted_cross_entropy():
  z, y, n = CASES['random']
  w = np_cb_weights(n, 0.9999)
  np.testing.assert_allclose(
      class_balanced_loss(z, y, class_counts=n, variant='softmax', reduction='mean'),
      softmax_cross_entropy(z, y, class_weights=w, reduction='mean'),
      rtol=1e-5,
  )
  # The official code's plain mean: sum_i w_i CE_i / B.
  np.testing.assert_allclose(
      class_balanced_loss(
          z, y, class_counts=n, variant='softmax', reduction='mean', weighted_reduction='batch'
      ),
      np.mean(np.asarray(softmax_cross_entropy(z, y, class_weights=w))),
      rtol=1e-5,
  )
  with pytest.raises(ValueError, match='weighted_reduction'):
    class_balanced_loss(z, y, class_counts=n, reduction='mean', weighted_reduction='mean')


def test_effective_number_weights(x64):
  del x64
  n = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])
  w = effective_number_weights(n, 0.9999)
  np.testing.assert_allclose(w, np_cb_weights(n, 0.9999), rtol=1e-12)
  np.testing.assert_allclose(w.sum(), 10.0)
  np.testing.assert_allclose(effective_number_weights(n, 0.0), np.ones(10))
  np.testing.assert_allclose(effective_number_weights(n, 1.0), np_cb_weights(n, 1.0), rtol=1e-12)
  np.testing.assert_allclose(
      effective_number_weights(n, 0.9999, normalize=False),
      (1 - 0.9999) / (1 - 0.9999**n),
      rtol=1e-9,
  )
  # float32 with the host-side log(beta) stays close to the float64 weights.
  with jax.enable_x64(False):
    np.testing.assert_allclose(
        effective_number_weights(n, 0.9999), np_cb_weights(n, 0.9999), rtol=1e-5
    )


def test_lort_is_label_smoothing():
  z, y, _ = CASES['random']
  np.testing.assert_allclose(
      lort_loss(z, y, delta=0.99, reduction='mean'),
      softmax_cross_entropy(z, y, label_smoothing=0.99, reduction='mean'),
      rtol=1e-6,
  )
  # The paper's target: 1 - delta + delta/K at y, delta/K elsewhere (K = 7).
  target = np.full(7, 0.98 / 7)
  target[y[0]] += 0.02
  np.testing.assert_allclose(
      lort_loss(z[:1], y[:1], delta=0.98), [-(target * np_log_softmax(z[:1])[0]).sum()], rtol=1e-5
  )


def test_vs_special_cases():
  z, y, n = CASES['random']
  w = np.linspace(0.5, 2.0, 7)
  for weights in (None, w):
    kw = dict(class_weights=weights, reduction='none')
    # gamma = tau = 0: CE.
    np.testing.assert_allclose(
        vs_loss(z, y, class_counts=n, gamma=0.0, tau=0.0, **kw),
        softmax_cross_entropy(z, y, **kw),
        rtol=1e-6,
        atol=1e-6,
    )
    # gamma = 0: LA.
    np.testing.assert_allclose(
        vs_loss(z, y, class_counts=n, gamma=0.0, tau=0.7, **kw),
        logit_adjusted_loss(z, y, class_counts=n, tau=0.7, **kw),
        rtol=1e-6,
        atol=1e-6,
    )
    # tau = 0: CDT, CE(z / a_c) with a_c = (n_max / n_c)^gamma (Ye et al.).
    a = (n.max() / n) ** 0.4
    np.testing.assert_allclose(
        vs_loss(z, y, class_counts=n, gamma=0.4, tau=0.0, **kw),
        np_ce(z / a, y, weights),
        rtol=1e-5,
        atol=1e-6,
    )
    # gamma = 0, tau = 1: Balanced Softmax (log pi and log n differ by log N).
    np.testing.assert_allclose(
        vs_loss(z, y, class_counts=n, gamma=0.0, tau=1.0, **kw),
        balanced_softmax_loss(z, y, class_counts=n, **kw),
        rtol=1e-5,
        atol=1e-5,
    )


def test_tla_gamma_switches_vs_to_la_inside_jit():
  z, y, n = CASES['random']

  @jax.jit
  def loss(epoch):
    g = tla_gamma(0.3, epoch, switch_epoch=160)
    return vs_loss(z, y, class_counts=n, gamma=g, tau=1.0, reduction='mean')

  la = logit_adjusted_loss(z, y, class_counts=n, tau=1.0, reduction='mean')
  vs = vs_loss(z, y, class_counts=n, gamma=0.3, tau=1.0, reduction='mean')
  np.testing.assert_allclose(loss(159), vs, rtol=1e-6)
  np.testing.assert_allclose(loss(160), la, rtol=1e-6)


# ---------------------------------------------------------------------------
# Gradients: central finite differences (float64) and LWR's Eq. 4
# ---------------------------------------------------------------------------


def _finite_difference_grad(f, x, h=1e-6):
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    e = np.zeros_like(x)
    e[idx] = h
    grad[idx] = (float(f(x + e)) - float(f(x - e))) / (2 * h)
  return grad


GRAD_LOSSES = {
    'focal_g05': lambda z, y, n, w: focal_loss(z, y, gamma=0.5, class_weights=w, reduction='mean'),
    'vs': lambda z, y, n, w: vs_loss(
        z, y, class_counts=n, gamma=0.3, tau=1.0, class_weights=w, reduction='mean'
    ),
    'ldam': lambda z, y, n, w: ldam_loss(
        z, y, class_counts=n, scale=5.0, class_weights=w, reduction='mean'
    ),
    'lort': lambda z, y, n, w: lort_loss(z, y, delta=0.98, reduction='mean'),
    'cb_focal': lambda z, y, n, w: class_balanced_loss(
        z, y, class_counts=n, variant='focal', reduction='mean'
    ),
    'cb_softmax_bce': lambda z, y, n, w: class_balanced_loss(
        z, y, class_counts=n, variant='softmax_bce', reduction='mean'
    ),
}


@pytest.mark.parametrize('name', list(GRAD_LOSSES))
def test_gradient_matches_finite_differences(x64, name):
  del x64
  rng = np.random.default_rng(2)
  z = rng.normal(0, 2, (4, 5))
  z[0, 1] = 12.0  # A confident row: p_top near 1 exercises the stable branches.
  y = np.array([1, 0, 4, 4])
  n = np.array([300, 60, 12, 3, 1])
  w = jnp.asarray(rng.uniform(0.5, 2.0, 5))
  f = jax.jit(lambda x: GRAD_LOSSES[name](x, jnp.asarray(y), n, w))
  np.testing.assert_allclose(
      jax.jit(jax.grad(f))(jnp.asarray(z)), _finite_difference_grad(f, z), rtol=1e-6, atol=1e-8
  )


@pytest.mark.parametrize('theta', [-1.0, 0.4])
def test_lwr_value_and_gradient_is_eq4(x64, theta):
  del x64
  rng = np.random.default_rng(5)
  base = rng.normal(size=(1, 8))
  w = rng.normal(size=(6, 8)) + 0.8 * base  # Correlated rows: cosines both sides of 0.4.
  w[0] *= 5.0  # Unequal norms.
  u = w / np.linalg.norm(w, axis=1, keepdims=True)
  cos = u @ u.T
  off = cos[~np.eye(6, dtype=bool)]
  assert np.any(off > 0.4) and np.any(off < 0.4) and np.min(np.abs(off - theta)) > 1e-3
  f = jax.jit(lambda x: lwr_regularizer(x, theta=theta, tau=0.1))
  np.testing.assert_allclose(f(jnp.asarray(w)), np_lwr(w, theta, 0.1), rtol=1e-12)
  grad = jax.jit(jax.grad(f))(jnp.asarray(w))
  np.testing.assert_allclose(grad, np_lwr_grad_eq4(w, theta, 0.1), rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(grad, _finite_difference_grad(f, w), rtol=1e-6, atol=1e-8)
  # Each row's gradient is orthogonal to the row: repulsion turns, it does not shrink.
  np.testing.assert_allclose(np.sum(np.asarray(grad) * w, axis=1), 0.0, atol=1e-10)


def test_lwr_threshold_endpoints():
  w = jnp.asarray(np.random.default_rng(4).normal(size=(5, 3)))
  # theta = 1: no pair passes (cos_ii = 1 is not > 1): R = C log C, no gradient.
  np.testing.assert_allclose(lwr_regularizer(w, theta=1.0), 5 * np.log(5), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.grad(lambda x: lwr_regularizer(x, theta=1.0)))(w), 0.0)
  # Orthogonal rows with theta = 0.4: all off-diagonal s_ij = 0.
  eye = jnp.eye(4, 6)
  want = 4 * (np.log(np.exp(10.0) + 3) - 10.0)
  np.testing.assert_allclose(lwr_regularizer(eye), want, rtol=1e-5)


def test_feature_norm_regularizer():
  f = np.random.default_rng(5).normal(size=(4, 3, 2))
  want = np.mean([0.5 * np.sum(x**2) for x in f])
  np.testing.assert_allclose(feature_norm_regularizer(f), want, rtol=1e-6)
  np.testing.assert_allclose(jax.grad(feature_norm_regularizer)(jnp.asarray(f)), f / 4, rtol=1e-6)


# ---------------------------------------------------------------------------
# Dot regression (EWB's DotRegressionLoss)
# ---------------------------------------------------------------------------


def test_dot_regression_hand_computed_example():
  f = np.array([[3.0, 4.0], [1.0, 0.0]])  # |f| = 5, 1.
  m = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])  # |m_c| = 1, 2, sqrt(2).
  z = np.array([[0.5, 7.0, -1.0], [2.0, 0.0, 1.0]])
  y = np.array([1, 2])
  # s = (5 * 2, 1 * sqrt(2)); DR = (z_y - s)^2 / (2 s).
  want = np.array([(7.0 - 10.0) ** 2 / 20.0, (1.0 - np.sqrt(2)) ** 2 / (2 * np.sqrt(2))])
  np.testing.assert_allclose(want, [0.45, 0.0606601717798], rtol=1e-10)
  got = dot_regression_loss(z, y, features=f, class_vectors=m)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(np_dot_regression(z, y, f, m), want, rtol=1e-12)
  np.testing.assert_allclose(
      dot_regression_loss(z, y, features=f, class_vectors=m, reduction='mean'),
      want.mean(),
      rtol=1e-6,
  )
  # Class weights (EWB's CB 'dr' variant multiplies w_y): PyTorch's weighted mean.
  cw = np.array([1.0, 2.0, 0.5])
  np.testing.assert_allclose(
      dot_regression_loss(z, y, features=f, class_vectors=m, class_weights=cw, reduction='mean'),
      (2.0 * want[0] + 0.5 * want[1]) / 2.5,
      rtol=1e-6,
  )
  # A logit on the target is a zero loss.
  z_at = z.copy()
  z_at[0, 1], z_at[1, 2] = 10.0, np.sqrt(2)
  np.testing.assert_allclose(
      dot_regression_loss(z_at, y, features=f, class_vectors=m), 0.0, atol=1e-6
  )


def test_dot_regression_against_numpy_and_finite_differences(x64):
  del x64
  rng = np.random.default_rng(3)
  f = rng.normal(size=(6, 5))
  m = rng.normal(size=(4, 5))
  y = np.array([0, 3, 1, 1, 2, 3])
  cw = rng.uniform(0.5, 2.0, 4)
  w_bias = rng.normal(size=4)
  z = f @ m.T + w_bias  # The logits of the affine head (m, b).
  for weights in (None, cw):
    for reduction in ('none', 'mean', 'sum'):
      np.testing.assert_allclose(
          dot_regression_loss(
              z, y, features=f, class_vectors=m, class_weights=weights, reduction=reduction
          ),
          np_dot_regression(z, y, f, m, weights, reduction),
          rtol=1e-12,
      )
  # The target s is detached: the gradient in z is the finite difference with f, m fixed.
  loss = jax.jit(
      lambda x: dot_regression_loss(
          x, jnp.asarray(y), features=f, class_vectors=m, class_weights=cw, reduction='mean'
      )
  )
  grad = jax.jit(jax.grad(loss))(jnp.asarray(z))
  np.testing.assert_allclose(grad, _finite_difference_grad(loss, z), rtol=1e-6, atol=1e-9)
  # Analytically: w_i (z_iy - s_i) / s_i / sum_i w_i at the true class, 0 elsewhere.
  s = np.linalg.norm(f, axis=1) * np.linalg.norm(m, axis=1)[y]
  want = np.zeros_like(z)
  want[np.arange(6), y] = cw[y] * (z[np.arange(6), y] - s) / s / cw[y].sum()
  np.testing.assert_allclose(grad, want, rtol=1e-10, atol=1e-14)
  # No gradient through the norms: none reaches the features or class vectors directly.
  g_f, g_m = jax.grad(
      lambda a, b: dot_regression_loss(z, y, features=a, class_vectors=b, reduction='sum'),
      argnums=(0, 1),
  )(jnp.asarray(f), jnp.asarray(m))
  np.testing.assert_array_equal(g_f, 0.0)
  np.testing.assert_array_equal(g_m, 0.0)


def test_dot_regression_checks_shapes():
  z, y = np.zeros((3, 4)), np.zeros(3, int)
  with pytest.raises(ValueError, match='features'):
    dot_regression_loss(z, y, features=np.ones((2, 5)), class_vectors=np.ones((4, 5)))
  with pytest.raises(ValueError, match='class_vectors'):
    dot_regression_loss(z, y, features=np.ones((3, 5)), class_vectors=np.ones((5, 4)))


# ---------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------


def test_drw_and_adrw_weights_switch_at_t0():
  n = COUNTS7
  for fn, kw in ((drw_weights, dict(beta=0.9999)), (adrw_weights, dict(nu=0.25))):
    before = fn(n, 159, switch_epoch=160, **kw)
    frac = fn(n, 159.99, switch_epoch=160, **kw)
    at = fn(n, 160, switch_epoch=160, **kw)
    after = fn(n, 199, switch_epoch=160, **kw)
    np.testing.assert_array_equal(before, np.ones(7))
    np.testing.assert_array_equal(frac, np.ones(7))
    np.testing.assert_allclose(at, after)
    np.testing.assert_allclose(np.sum(at), 7.0, rtol=1e-6)
    assert np.all(np.diff(np.asarray(at)) > 0)  # Rarer classes weigh more.
  np.testing.assert_allclose(
      drw_weights(n, 160, switch_epoch=160), np_cb_weights(n, 0.9999), rtol=1e-5
  )
  pi = n / n.sum()
  np.testing.assert_allclose(
      adrw_weights(n, 160, switch_epoch=160, nu=0.25), pi**-0.25 / np.sum(pi**-0.25) * 7, rtol=1e-5
  )
  # Traced epoch inside jit.
  traced = jax.jit(lambda e: adrw_weights(n, e, switch_epoch=160, nu=0.25))
  np.testing.assert_array_equal(traced(3), np.ones(7))
  np.testing.assert_allclose(traced(170), adrw_weights(n, 160, switch_epoch=160, nu=0.25))


def test_tla_gamma_and_lwr_lambda():
  assert float(tla_gamma(0.3, 159, switch_epoch=160)) == pytest.approx(0.3)
  assert float(tla_gamma(0.3, 160, switch_epoch=160)) == 0.0
  assert float(tla_gamma(0.3, 161, switch_epoch=160)) == 0.0
  assert float(lwr_lambda(0, total_epochs=200)) == 1.0
  assert float(lwr_lambda(100, total_epochs=200, lambda0=2.0)) == pytest.approx(0.5)
  assert float(lwr_lambda(199, total_epochs=200)) == pytest.approx(1 / 200**2, rel=1e-5)
  assert float(lwr_lambda(200, total_epochs=200)) == 0.0
  assert float(lwr_lambda(250, total_epochs=200)) == 0.0  # Clipped, does not grow again.
  assert float(jax.jit(lambda t: lwr_lambda(t, total_epochs=200))(50.0)) == pytest.approx(0.5625)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
  z, y, n = CASES['random']
  with pytest.raises(ValueError, match='reduction'):
    focal_loss(z, y, gamma=2.0, reduction='avg')
  with pytest.raises(ValueError, match='>= 1'):
    balanced_softmax_loss(z, y, class_counts=np.array([5, 0, 1, 1, 1, 1, 1]))
  with pytest.raises(ValueError, match='shape'):
    vs_loss(z, y, class_counts=n[:5], gamma=0.1, tau=1.0)
  with pytest.raises(ValueError, match='variant'):
    class_balanced_loss(z, y, class_counts=n, variant='sigmoid_bce')
  with pytest.raises(ValueError, match='beta'):
    effective_number_weights(n, 1.5)
  with pytest.raises(ValueError, match='delta'):
    lort_loss(z, y, delta=1.5)
  with pytest.raises(ValueError, match='gamma'):
    focal_loss(z, y, gamma=-1.0)
  with pytest.raises(ValueError, match='class_weights'):
    ldam_loss(z, y, class_counts=n, class_weights=np.ones(3))


# ---------------------------------------------------------------------------
# Property: no NaN/inf in any value or gradient for finite logits.
# ---------------------------------------------------------------------------


@functools.cache
def _all_losses_and_grads(num_classes):
  del num_classes  # One compilation per class count (the cache key).

  def losses(z, y, n, gamma, w):
    return {
        'focal': focal_loss(z, y, gamma=gamma, class_weights=w, reduction='mean'),
        'focal_code': focal_loss(
            z, y, gamma=gamma, class_weights=w, reduction='mean', convention='ldam_code'
        ),
        'bs': balanced_softmax_loss(z, y, class_counts=n, reduction='mean'),
        'la': logit_adjusted_loss(z, y, class_counts=n, tau=1.0, reduction='mean'),
        'vs': vs_loss(
            z, y, class_counts=n, gamma=gamma, tau=1.0, class_weights=w, reduction='mean'
        ),
        'ldam': ldam_loss(z, y, class_counts=n, class_weights=w, reduction='mean'),
        'lort': lort_loss(z, y, delta=0.99, reduction='mean'),
        'cb_softmax': class_balanced_loss(z, y, class_counts=n, reduction='mean'),
        'cb_sigmoid': class_balanced_loss(
            z, y, class_counts=n, variant='sigmoid', reduction='mean'
        ),
        'cb_focal': class_balanced_loss(
            z, y, class_counts=n, variant='focal', gamma=gamma, reduction='mean'
        ),
        'cb_softmax_bce': class_balanced_loss(
            z, y, class_counts=n, variant='softmax_bce', reduction='mean'
        ),
        'lwr': lwr_regularizer(z.T),
        'fr': feature_norm_regularizer(z),
    }

  def values_and_grad(z, y, n, gamma, w):
    # One gradient of the sum: any non-finite component makes it non-finite.
    values, vjp = jax.vjp(lambda x: losses(x, y, n, gamma, w), z)
    (grad,) = vjp(jax.tree.map(jnp.ones_like, values))
    return values, grad

  return jax.jit(values_and_grad)


@st.composite
def _problems(draw):
  num_classes = draw(st.sampled_from([2, 5]))
  logits = draw(hnp.arrays(np.float32, (6, num_classes), elements=st.floats(-100, 100, width=32)))
  labels = draw(hnp.arrays(np.int32, (6,), elements=st.integers(0, num_classes - 1)))
  counts = draw(hnp.arrays(np.int32, (num_classes,), elements=st.integers(1, 100_000)))
  gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))
  weights = draw(hnp.arrays(np.float32, (num_classes,), elements=st.floats(0.0625, 16, width=32)))
  return logits, labels, counts, gamma, weights


@hypothesis.settings(max_examples=50, deadline=None, derandomize=True, database=None)
@hypothesis.given(_problems())
def test_no_nan_or_inf_for_finite_logits(problem):
  logits, labels, counts, gamma, weights = problem
  fn = _all_losses_and_grads(logits.shape[-1])
  values, grad = fn(logits, labels, counts.astype(np.float32), np.float32(gamma), weights)
  for k in values:
    assert np.isfinite(float(values[k])), (k, problem)
  assert np.all(np.isfinite(np.asarray(grad))), problem
