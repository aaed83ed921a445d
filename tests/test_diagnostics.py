"""Tests for ltjax.eval.diagnostics: every quantity by hand and against brute-force numpy."""

# Every metric is checked against a value worked out by hand on a small
# constructed example (written out in the comments), and the pair / scatter
# statistics also against brute-force numpy (all N^2 pairs, explicit D x D
# matrices) on random data.

import math

import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy.special import logsumexp

from ltjax.eval import diagnostics as dg

# ------------------------------------------------------------------ logits

# 4 samples, 3 classes.
_Z = np.array(
    [[3.0, 1.0, 0.0], [1.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 4.0]]  # y = 0  # y = 1  # y = 0
)  # y = 2
_Y = np.array([0, 1, 0, 2])


def test_logits_magnitude_by_hand():
  # L_0 = mean(3, 2) - mean(1, 0) = 2; L_1 = 2 - mean(1, 0, 1) = 4/3;
  # L_2 = 4 - mean(0, 0, 1) = 11/3.
  magnitude = dg.logits_magnitude(_Z, _Y, 3)
  np.testing.assert_allclose(magnitude, [2.0, 4 / 3, 11 / 3])
  np.testing.assert_allclose(
      dg.logits_magnitude(_Z, _Y, 3, normalize=True), np.array([2.0, 4 / 3, 11 / 3]) / 7.0
  )
  # A class with no test sample (column 3) is NaN, the others unchanged.
  wide = np.concatenate([_Z, np.ones((4, 1))], axis=1)
  magnitude = dg.logits_magnitude(wide, _Y, 4)
  np.testing.assert_allclose(magnitude[:3], [2.0, 4 / 3, 11 / 3])
  assert np.isnan(magnitude[3])


def test_regularized_std_by_hand():
  magnitude = np.array([2.0, 4 / 3, 11 / 3])
  # sigma over all samples: column 0 (3, 1, 2, 0) var 1.25; column 1 (1, 2, 0, 1)
  # var 0.5; column 2 (0, 0, 1, 4) var 10.75 / 4.
  sigma_all = np.sqrt([1.25, 0.5, 10.75 / 4])
  np.testing.assert_allclose(dg.regularized_std(_Z, _Y, 3), sigma_all / magnitude)
  # Positives: class 0 (3, 2) -> 0.5; classes 1, 2 have one positive -> 0.
  np.testing.assert_allclose(
      dg.regularized_std(_Z, _Y, 3, over='positive'),
      np.array([0.5, 0.0, 0.0]) / magnitude,
      atol=1e-15,
  )
  # Negatives: class 0 (1, 0) -> 0.5; class 1 (1, 0, 1) and class 2 (0, 0, 1)
  # -> variance 2/9.
  np.testing.assert_allclose(
      dg.regularized_std(_Z, _Y, 3, over='negative'),
      np.array([0.5, math.sqrt(2 / 9), math.sqrt(2 / 9)]) / magnitude,
  )
  with pytest.raises(ValueError, match='over'):
    dg.regularized_std(_Z, _Y, 3, over='both')


def test_label_validation():
  with pytest.raises(ValueError, match=r'\[0, 2\)'):
    dg.logits_magnitude(_Z[:, :2], _Y, 2)
  with pytest.raises(ValueError, match='columns'):
    dg.logits_magnitude(_Z, _Y, 4)


def test_group_summary():
  counts = np.array([500, 150, 101, 100, 50, 20, 19, 5])
  values = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, np.nan])
  # many (> 100): 1, 2, 3; medium (20..100): 4, 5, 6; few (< 20): 7 (NaN skipped).
  assert dg.group_summary(values, counts) == {'many': 2.0, 'medium': 5.0, 'few': 7.0}
  summary = dg.group_summary(np.ones(3), np.array([500, 200, 101]))
  assert summary['many'] == 1.0 and np.isnan(summary['medium']) and np.isnan(summary['few'])
  # Thresholds are arguments: many > 19 (1..6), medium exactly 19, few < 19 (NaN).
  summary = dg.group_summary(values, counts, many_threshold=19, few_threshold=19)
  assert summary['many'] == 3.5 and summary['medium'] == 7.0 and np.isnan(summary['few'])
  with pytest.raises(ValueError):
    dg.group_summary(values[:3], counts)
  # By rank (eval.groups='rank'): the 2 largest counts many, the next 3 medium, the rest few.
  summary = dg.group_summary(values, counts, groups='rank', group_sizes=(2, 3))
  assert summary == {'many': 1.5, 'medium': 4.0, 'few': 6.5}


def test_decile_summary():
  counts = np.array([5, 100, 7, 50, 3, 80, 1, 60, 9, 30, 2, 40])
  # Sorted by count, head first: 100 80 | 60 50 | 40 | 30 | 9 | 7 | 5 | 3 | 2 | 1
  # (array_split gives the first 12 mod 10 = 2 bins one class more).
  assert dg.decile_summary(counts.astype(float), counts) == [90, 55, 40, 30, 9, 7, 5, 3, 2, 1]
  few = dg.decile_summary(np.array([1.0, 2.0, 3.0]), np.array([10, 30, 20]))
  assert few[:3] == [2.0, 3.0, 1.0] and all(np.isnan(few[3:]))
  # Ties keep class order.
  assert dg.decile_summary(np.arange(4.0), np.ones(4), num_bins=2) == [0.5, 2.5]


# ---------------------------------------------------------------- features


def _random_problem(seed=0, n=300, d=5, c=6):
  rng = np.random.default_rng(seed)
  labels = np.minimum(rng.geometric(0.35, size=n) - 1, c - 1)  # imbalanced
  means = rng.normal(size=(c, d)) * 2
  return means[labels] + rng.normal(size=(n, d)) + 0.5, labels


def _class_means_np(x, y):
  classes = np.unique(y)
  return classes, np.stack([x[y == k].mean(0) for k in classes])


def test_fdr_by_hand_and_degenerate_cases():
  # 1-D: class 0 (0, 2), class 1 (4, 6): mu_0 = 1, mu_1 = 5, mu = 3,
  # S_B = 2*4 + 2*4 = 16, S_W = 4 * 1 = 4, FDR = 4.
  x = np.array([[0.0], [2.0], [4.0], [6.0]])
  y = np.array([0, 0, 1, 1])
  assert dg.fisher_discriminant_ratio(x, y) == pytest.approx(4.0)
  # A constant extra dimension is dropped; the ratio is scale invariant.
  x2 = np.concatenate([3 * x, np.full((4, 1), 7.0)], axis=1)
  assert dg.fisher_discriminant_ratio(x2, y) == pytest.approx(4.0)
  # Two identical classes: S_B = 0.
  same = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 5.0]])
  x3 = np.concatenate([same, same])
  assert dg.fisher_discriminant_ratio(x3, np.repeat([0, 1], 3)) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match='at least 2'):
    dg.fisher_discriminant_ratio(x, np.zeros(4, int))


def test_fdr_nc1_cosine_against_brute_force():
  x, y = _random_problem()
  c = 6
  classes, means = _class_means_np(x, y)
  counts = np.array([np.sum(y == k) for k in classes])
  # FDR: explicit scatter matrices and inverse.
  mu = x.mean(0)
  s_b = sum(n * np.outer(m - mu, m - mu) for n, m in zip(counts, means))
  s_w = sum(np.outer(r, r) for r in x - means[np.searchsorted(classes, y)])
  np.testing.assert_allclose(
      dg.fisher_discriminant_ratio(x, y), np.trace(np.linalg.inv(s_w) @ s_b), rtol=1e-10
  )
  # NC1: Sigma_W over samples, Sigma_B around the mean of class means, pinv.
  centred = means - means.mean(0)
  sigma_b = centred.T @ centred / len(classes)
  sigma_w = s_w / len(x)
  expected = np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / len(classes)
  np.testing.assert_allclose(dg.nc1(x, y, c), expected, rtol=1e-9)
  # D > K - 1: S_B is rank deficient, the pseudo-inverse acts on its range.
  x_wide, y_wide = _random_problem(seed=1, d=9, c=4)
  classes, means = _class_means_np(x_wide, y_wide)
  centred = means - means.mean(0)
  within = x_wide - means[np.searchsorted(classes, y_wide)]
  expected = np.trace(
      within.T @ within / len(x_wide) @ np.linalg.pinv(centred.T @ centred / len(classes))
  ) / len(classes)
  np.testing.assert_allclose(dg.nc1(x_wide, y_wide, 4), expected, rtol=1e-9)
  # Cosine statistics over all N^2 pairs, and the class-pair matrix.
  units = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = units @ units.T
  same = y[:, None] == y[None, :]
  off = ~np.eye(len(x), dtype=bool)
  stats = dg.cosine_similarity_stats(x, y)
  np.testing.assert_allclose(stats['intra'], cos[same & off].mean(), rtol=1e-12)
  np.testing.assert_allclose(stats['inter'], cos[~same].mean(), rtol=1e-12)
  matrix = dg.class_mean_cosine_matrix(x, y, c)
  for a in range(c):
    for b in range(c):
      block = cos[np.ix_(y == a, y == b)]
      expected = block[~np.eye(len(block), dtype=bool)].mean() if a == b else block.mean()
      np.testing.assert_allclose(matrix[a, b], expected, rtol=1e-10)
  with_self = dg.class_mean_cosine_matrix(x, y, c, include_self=True)
  np.testing.assert_allclose(with_self[0, 0], cos[np.ix_(y == 0, y == 0)].mean())


def test_cosine_stats_on_one_hot_features():
  e = np.eye(3)
  # class 0: e0, e0, e1; class 1: e2, -e0.
  x = np.stack([e[0], 5 * e[0], e[1], e[2], -2 * e[0]])
  y = np.array([0, 0, 0, 1, 1])
  # intra pairs: (e0, e0) = 1, (e0, e1) = 0 twice, (e2, -e0) = 0 -> 1/4.
  # inter pairs: 6, two of them (e0, -e0) = -1 -> -1/3.
  stats = dg.cosine_similarity_stats(x, y)
  assert stats['intra'] == pytest.approx(0.25) and stats['inter'] == pytest.approx(-1 / 3)
  matrix = dg.class_mean_cosine_matrix(x, y, 3)
  np.testing.assert_allclose(matrix[:2, :2], [[1 / 3, -1 / 3], [-1 / 3, 0.0]], atol=1e-15)
  assert np.all(np.isnan(matrix[2])) and np.all(np.isnan(matrix[:, 2]))
  # With the self pairs (the official heat map): (3 + 2) / 9 and (2 + 0) / 4.
  with_self = dg.class_mean_cosine_matrix(x, y, 3, include_self=True)
  np.testing.assert_allclose(np.diag(with_self)[:2], [5 / 9, 0.5])
  # Orthogonal one-hot classes: intra 1, inter 0.
  stats = dg.cosine_similarity_stats(np.repeat(e, 4, axis=0), np.repeat([0, 1, 2], 4))
  assert stats == {'intra': 1.0, 'inter': 0.0}


def test_feature_norm_per_class():
  x = np.array([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
  y = np.array([0, 0, 1])
  norms = dg.feature_norm_per_class(x, y, 3)
  np.testing.assert_allclose(norms[:2], [3.0, 10.0])
  assert np.isnan(norms[2])
  np.testing.assert_allclose(
      dg.feature_norm_per_class(x, y, 3, of_mean=True)[:2], [math.sqrt(8.5), 10.0]
  )


def _etf_features(c=5, d=8, per_class=4, noise=0.0, seed=0):
  # Simplex ETF (EWB Eq. 11) in float64, scaled, rotated and offset.
  rng = np.random.default_rng(seed)
  u, _ = np.linalg.qr(rng.normal(size=(d, c)))
  etf = math.sqrt(c / (c - 1)) * u @ (np.eye(c) - np.full((c, c), 1 / c))
  means = 3.0 * etf.T + 1.5
  y = np.repeat(np.arange(c), per_class)
  return means[y] + noise * rng.normal(size=(len(y), d)), y


def test_perfect_simplex_etf_gives_zero_nc1_and_etf_distance():
  x, y = _etf_features()
  assert dg.nc1(x, y, 5) == pytest.approx(0.0, abs=1e-20)
  assert dg.etf_distance(x, y, 5) == pytest.approx(0.0, abs=1e-12)
  # Absent classes are skipped: 4 vertices of a regular simplex are one.
  keep = y < 4
  assert dg.etf_distance(x[keep], y[keep], 5) == pytest.approx(0.0, abs=1e-12)
  # Pulling one class mean toward another breaks the equal angles.
  moved = x.copy()
  moved[y == 0] += 0.5 * (x[y == 1][0] - x[y == 0][0])
  assert dg.etf_distance(moved, y, 5) > 0.05
  noisy, y = _etf_features(noise=0.3)
  assert dg.nc1(noisy, y, 5) > 1e-3


def test_nc1_and_etf_distance_by_hand():
  # K = 2, D = 1: class means -1, +1 (centre 0), S_B = 1; samples (-2, 0) and
  # (0, 2) deviate by 1, S_W = 1: NC1 = Tr(1 * 1) / 2 = 0.5.
  x = np.array([[-2.0], [0.0], [0.0], [2.0]])
  y = np.array([0, 0, 1, 1])
  assert dg.nc1(x, y, 2) == pytest.approx(0.5)
  assert dg.etf_distance(x, y, 2) == pytest.approx(0.0, abs=1e-15)  # 2 points: an ETF
  # K = 3 means (0, 0), (1, 0), (0, 1): centred and normalised, u0 = -(1, 1)/sqrt2,
  # u1 = (2, -1)/sqrt5, u2 = (-1, 2)/sqrt5: cosines -1/sqrt10, -1/sqrt10, -4/5
  # against -1/2; |E|_F = 3 / sqrt2.
  x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  y = np.arange(3)
  expected = math.sqrt(4 * (0.5 - 1 / math.sqrt(10)) ** 2 + 2 * 0.3**2) / (3 / math.sqrt(2))
  assert dg.etf_distance(x, y, 3) == pytest.approx(expected)
  # Collinear means (0, 1, 2): the middle centred mean is 0 -> NaN.
  assert math.isnan(dg.etf_distance(np.array([[0.0], [1.0], [2.0]]), y, 3))


# -------------------------------------------------------------- classifier


def test_weight_norms_cosines_and_angles():
  kernel = np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 3.0]])  # columns = class vectors
  np.testing.assert_allclose(dg.weight_norm_per_class(kernel), [1.0, 2.0, 3 * math.sqrt(2)])
  s = 1 / math.sqrt(2)
  np.testing.assert_allclose(
      dg.weight_cosine_matrix(kernel), [[1, 0, s], [0, 1, s], [s, s, 1]], atol=1e-15
  )
  # Directions at 0, 90, 180 and 45 degrees; classes many, many, few, few.
  kernel = np.array([[1.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
  angles = dg.head_tail_angles(kernel, np.array([200, 150, 5, 3]))
  assert angles['many-many']['mean'] == pytest.approx(90.0)
  assert angles['few-few']['mean'] == pytest.approx(135.0)
  np.testing.assert_allclose(np.sort(angles['many-few']['angles']), [45, 45, 90, 180])
  assert angles['many-few']['mean'] == pytest.approx(90.0)
  assert angles['many-few']['min'] == pytest.approx(45.0)
  assert angles['all']['mean'] == pytest.approx(585 / 6) and angles['all']['count'] == 6
  assert angles['medium-medium']['count'] == 0 and np.isnan(angles['many-medium']['mean'])


def test_batchnorm_scale_stats_on_a_tree():
  params = {
      'stem_bn': {'scale': np.array([1.0, -3.0]), 'bias': np.array([0.0, 2.0])},
      'block': {
          'bn1': {'scale': np.full(4, 0.5), 'bias': np.zeros(4)},
          'conv': {'kernel': np.ones((3, 3))},
      },
      'LayerNorm_0': {'scale': np.array([9.0])},
      'head': {'kernel': np.ones((2, 2)), 'bias': np.zeros(2)},
  }
  stats = dg.batchnorm_scale_stats(params)
  assert set(stats) == {'stem_bn', 'block/bn1', 'all'}
  assert stats['stem_bn'] == {
      'mean_abs_scale': 2.0,
      'mean_scale': -1.0,
      'std_scale': 2.0,
      'num': 2,
      'var_bias': 1.0,
  }
  assert stats['block/bn1']['std_scale'] == 0.0
  assert stats['all']['mean_abs_scale'] == pytest.approx(1.0)  # (1 + 3 + 4 * .5) / 6
  assert stats['all']['num'] == 6 and stats['all']['num_layers'] == 2
  # batch_stats, given or inside a variables dict, decide which modules are BN.
  variables = {'params': params, 'batch_stats': {'stem_bn': {'mean': 0, 'var': 1}}}
  assert set(dg.batchnorm_scale_stats(variables)) == {'stem_bn', 'all'}


def test_batchnorm_scale_stats_on_a_flax_model():

  class Net(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = nn.BatchNorm(use_running_average=False)(nn.Dense(3)(x))
      return nn.LayerNorm()(x)

  variables = Net().init(jax.random.key(0), np.ones((2, 4), np.float32))
  stats = dg.batchnorm_scale_stats(variables['params'])
  assert set(stats) == {'BatchNorm_0', 'all'}
  assert stats['BatchNorm_0']['mean_scale'] == 1.0 and stats['BatchNorm_0']['num'] == 3


# --------------------------------------------------------------- landscape


def _trained_like(seed=0, n_per_class=(40, 30, 25, 20, 10, 6), d=6):
  """Separable Gaussian classes and a head aligned with their means."""
  rng = np.random.default_rng(seed)
  c = len(n_per_class)
  means = 2.0 * np.linalg.qr(rng.normal(size=(d, c)))[0].T  # orthogonal, norm 2
  y = np.repeat(np.arange(c), n_per_class)
  x = means[y] + 0.4 * rng.normal(size=(len(y), d))
  return x, y, 2.0 * means.T, 0.1 * rng.normal(size=c)


def _numpy_group_ce(x, y, kernel, bias, counts):
  z = x @ kernel + bias
  ce = logsumexp(z, axis=1) - z[np.arange(len(y)), y]
  c = kernel.shape[1]
  present = np.bincount(y, minlength=c)
  per_class = np.where(
      present > 0, np.bincount(y, weights=ce, minlength=c) / np.maximum(present, 1), np.nan
  )
  return dict(dg.group_summary(per_class, counts), all=float(np.nanmean(per_class)))


def test_sharpness_curve_radius_zero_is_plain_ce_and_grows():
  x, y, kernel, bias = _trained_like()
  counts = np.array([500, 300, 100, 60, 10, 5])  # many 2, medium 2, few 2
  radii = (0, 0.05, 0.2, 0.5, 1.0)
  curve = dg.sharpness_curve(x, y, kernel, bias, counts, relative_radii=radii, num_directions=6)
  assert curve['relative_radius'] == list(radii)
  expected = _numpy_group_ce(x, y, kernel, bias, counts)
  for group in ('many', 'medium', 'few', 'all'):
    assert curve[group][0] == pytest.approx(expected[group], rel=1e-5)
    # Antithetic directions: non-decreasing in the radius, and clearly higher
    # at the largest radius than at the minimum.
    assert np.all(np.diff(curve[group]) >= -1e-6 * curve[group][0]), group
    assert curve[group][-1] > 2 * curve[group][0], group
  # Blocks of rows (with a padded last block) give the same numbers.
  blocked = dg.sharpness_curve(
      x, y, kernel, bias, counts, relative_radii=radii, num_directions=6, block_rows=17
  )
  np.testing.assert_allclose(blocked['all'], curve['all'], rtol=1e-5)


def test_sharpness_curve_relative_radius_and_absent_classes():
  x, y, kernel, _ = _trained_like(seed=1)
  counts = np.array([500, 300, 100, 60, 10, 5])
  radii = (0, 0.1, 0.3)
  # Bias-free head: (2W, f/2) has the same logits and, as |eps| = r |theta|,
  # the same perturbed logits for every direction and radius.
  one = dg.sharpness_curve(
      x, y, kernel, None, counts, relative_radii=radii, num_directions=3, antithetic=False, seed=4
  )
  two = dg.sharpness_curve(
      x / 2,
      y,
      2 * kernel,
      None,
      counts,
      relative_radii=radii,
      num_directions=3,
      antithetic=False,
      seed=4,
  )
  for group in ('many', 'medium', 'few', 'all'):
    np.testing.assert_allclose(two[group], one[group], rtol=1e-4)
  assert one['all'][2] != one['all'][1]
  # No test sample of the few classes: their group is NaN, the others are fine.
  keep = y < 4
  part = dg.sharpness_curve(x[keep], y[keep], kernel, None, counts, relative_radii=(0,))
  assert math.isnan(part['few'][0])
  expected = _numpy_group_ce(x[keep], y[keep], kernel, np.zeros(6), counts)
  assert part['many'][0] == pytest.approx(expected['many'], rel=1e-5)
  assert part['all'][0] == pytest.approx(expected['all'], rel=1e-5)
