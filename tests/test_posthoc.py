"""Tests for ltjax.eval.posthoc: logit adjustments against numpy, searches on planted optima."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ltjax.eval import posthoc
from ltjax.eval.metrics import classification_metrics
from ltjax.models import heads

D, C, B = 12, 5, 7
COUNTS = np.array([500, 200, 80, 30, 10])


def test_adjustments_against_numpy():
  z = np.asarray(jax.random.normal(jax.random.key(0), (B, C)))
  prior = COUNTS / COUNTS.sum()
  np.testing.assert_allclose(
      posthoc.additive_adjust(z, COUNTS, 0.8), z - 0.8 * np.log(prior), rtol=1e-6, atol=1e-6
  )
  np.testing.assert_allclose(
      posthoc.multiplicative_adjust(z, COUNTS, 0.65), z * prior**-0.65, rtol=1e-5
  )
  kernel = np.asarray(jax.random.normal(jax.random.key(1), (D, C)))
  f = np.asarray(jax.random.normal(jax.random.key(0), (B, D)))  # Features.
  norms = np.linalg.norm(kernel, axis=0)
  np.testing.assert_allclose(
      posthoc.weight_norm_adjust(f @ kernel, kernel, 1.3),
      f @ np.asarray(heads.tau_normalize(kernel, 1.3)),
      rtol=1e-4,
      atol=1e-5,
  )
  # EWB (Hasegawa & Sato, ICLR'24) Eq. (9): w'_k = w_k / (pi_k^gamma |w_k|).
  np.testing.assert_allclose(
      posthoc.normalized_multiplicative_adjust(f @ kernel, kernel, COUNTS, 0.5),
      f @ (kernel / (prior**0.5 * norms)),
      rtol=1e-4,
      atol=1e-5,
  )
  # tau = 0 / gamma = 0 change nothing.
  np.testing.assert_allclose(posthoc.additive_adjust(z, COUNTS, 0.0), z)
  np.testing.assert_allclose(posthoc.multiplicative_adjust(z, COUNTS, 0.0), z)
  with pytest.raises(ValueError, match='positive'):
    posthoc.additive_adjust(z, np.array([5, 0, 3, 2, 1]), 1.0)


@settings(max_examples=20, deadline=None)
@given(tau=st.floats(0.0, 2.0), factor=st.integers(1, 50))
def test_additive_predictions_depend_only_on_prior(tau, factor):
  z = np.asarray(jax.random.normal(jax.random.key(3), (40, C)))
  a = posthoc.additive_adjust(z, COUNTS, tau).argmax(-1)
  b = posthoc.additive_adjust(z, COUNTS * factor, tau).argmax(-1)
  np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- searches


def _planted(per_class=60, seed=0):
  """Labels, margins m_i in (0, 1] and class log-priors for planted optima."""
  rng = np.random.default_rng(seed)
  labels = np.repeat(np.arange(C), per_class)
  margins = rng.uniform(1e-3, 1.0, labels.shape)
  onehot = np.eye(C)[labels]
  return labels, margins, onehot


def _check_curve(curve, best, grid, logits_fn, labels):
  assert list(curve) == [float(v) for v in grid]
  assert curve[best] == max(curve.values())
  for value in (grid[0], best, grid[-1]):
    predictions = logits_fn(value).argmax(-1)
    expected = classification_metrics(predictions, labels, COUNTS)['balanced_accuracy']
    assert curve[float(value)] == pytest.approx(expected, abs=1e-12)


def test_search_additive_recovers_planted_tau():
  # z = clean + tau* log pi: z - tau log pi is correct for every sample only at
  # tau = tau* (clean true-class margins m_i go down to 1e-3).
  labels, margins, onehot = _planted()
  tau_star = 0.7
  z = margins[:, None] * onehot + tau_star * posthoc.log_prior(COUNTS)
  best, curve = posthoc.search_additive(z, labels, COUNTS)
  assert best == tau_star and curve[best] == 1.0
  assert all(acc < 1.0 for tau, acc in curve.items() if tau != tau_star)
  _check_curve(
      curve, best, posthoc.DEFAULT_GRID, lambda t: posthoc.additive_adjust(z, COUNTS, t), labels
  )


def test_search_multiplicative_recovers_planted_gamma():
  # z = (1 + m_i [c = y]) pi_c^gamma*: z pi^-gamma is correct for all only at gamma*.
  labels, margins, onehot = _planted(seed=1)
  gamma_star = 0.65
  prior = COUNTS / COUNTS.sum()
  z = (1.0 + margins[:, None] * onehot) * prior**gamma_star
  best, curve = posthoc.search_multiplicative(z, labels, COUNTS)
  assert best == gamma_star and curve[best] == 1.0
  assert all(acc < 1.0 for g, acc in curve.items() if g != gamma_star)
  _check_curve(
      curve,
      best,
      posthoc.DEFAULT_GRID,
      lambda g: posthoc.multiplicative_adjust(z, COUNTS, g),
      labels,
  )


def test_search_tau_norm_recovers_planted_tau():
  # Class vectors w_c = n_c e_c; features g_c n_c^-(1 - tau*), g = 1 + m_i [c = y],
  # so the tau-normalised logit is g_c n_c^(tau* - tau): all correct only at tau*.
  labels, margins, onehot = _planted(seed=2)
  tau_star = 1.3
  kernel = np.zeros((D, C))
  kernel[np.arange(C), np.arange(C)] = COUNTS
  feats = np.zeros((len(labels), D))
  feats[:, :C] = (1.0 + margins[:, None] * onehot) * COUNTS ** -(1.0 - tau_star)
  bias = np.zeros(C)
  best, curve = posthoc.search_tau_norm(feats, labels, kernel, bias)
  assert best == tau_star and curve[best] == 1.0
  assert all(acc < 1.0 for t, acc in curve.items() if t != tau_star)
  head = lambda t: np.asarray(
      heads.TauNormHead(C, tau=t).apply({'params': {'kernel': kernel, 'bias': bias}}, feats)
  )
  _check_curve(curve, best, posthoc.DEFAULT_GRID, head, labels)


def test_search_ties_go_to_smaller_adjustment():
  labels, _, onehot = _planted()
  z = 100.0 * onehot  # every small adjustment keeps 100 %
  grid = (0.5, -0.25, 0.25, 0.1)
  best, curve = posthoc.search_additive(z, labels, COUNTS, taus=grid)
  assert best == 0.1 and set(curve.values()) == {1.0}
  best, _ = posthoc.search_multiplicative(z, labels, COUNTS, gammas=(0.3, -0.3))
  assert best == -0.3  # equal |gamma|: the smaller value
  best, _ = posthoc.search_tau_norm(onehot, labels, 5.0 * np.eye(C), taus=(1.0, 0.0))
  assert best == 0.0
  with pytest.raises(ValueError, match='empty'):
    posthoc.search_additive(z, labels, COUNTS, taus=())


def test_tau_norm_adjust_gives_the_tau_norm_heads_logits_bias_kept():
  rng = np.random.default_rng(3)
  kernel, bias = rng.normal(size=(D, C)), rng.normal(size=C)
  feats = rng.normal(size=(7, D))
  for tau in (0.0, 0.7, 1.0, 1.6):
    head = heads.TauNormHead(C, tau=tau).apply({'params': {'kernel': kernel, 'bias': bias}}, feats)
    np.testing.assert_allclose(
        posthoc.tau_norm_adjust(feats @ kernel + bias, kernel, bias, tau),
        head,
        rtol=2e-5,
        atol=2e-5,
    )
