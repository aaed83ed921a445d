"""Tests for ltjax.eval.open_set: prototype scores and the open-set F-measure, by hand."""

import math

import numpy as np
import pytest

from ltjax.eval import open_set


def test_prototype_scores_by_hand():
  train = np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
  labels = np.array([0, 0, 1, 1])  # class 2 has no training sample
  test = np.array([[3.0, 1.0], [0.0, -5.0], [-1.0, 2.0]])
  scores, predictions = open_set.prototype_scores(train, labels, test, 3)
  # Unit prototypes (1, 0) and (0, 1): cosines (3/sqrt10, 1/sqrt10),
  # (0, -1), (-1/sqrt5, 2/sqrt5).
  np.testing.assert_allclose(scores, [3 / math.sqrt(10), 0.0, 2 / math.sqrt(5)], atol=1e-15)
  np.testing.assert_array_equal(predictions, [0, 0, 1])
  # Reachability: prototypes (3, 0) and (0, 2); nearest distances 1, 3, 1.
  scores, predictions = open_set.prototype_scores(
      train,
      labels,
      np.array([[3.0, 1.0], [0.0, -1.0], [-1.0, 2.0], [0.0, 2.0]]),
      3,
      metric='reachability',
  )
  np.testing.assert_allclose(scores, [1.0, 1 / 3, 1.0, np.inf])
  np.testing.assert_array_equal(predictions, [0, 1, 1, 1])


# Known samples k1..k6 and open samples o1, o2 (label -1).
_PRED = np.array([0, 1, 1, 2, 0, 2, 0, 1])
_LABEL = np.array([0, 1, 0, 2, 0, 1, -1, -1])
_SCORE = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.55, 0.3])
_OPEN = _LABEL == -1


def test_open_set_f_measure_by_hand():
  # Threshold 0.5 accepts k1, k2, k3, k5 and o1. TP = k1, k2, k5 = 3.
  # OLTR: FP = 6 known - 3 = 3, FN = o1 = 1: P = 1/2, R = 3/4, F = 0.6.
  kwargs = dict(is_open=_OPEN, threshold=0.5)
  assert open_set.open_set_f_measure(_PRED, _LABEL, _SCORE, **kwargs) == pytest.approx(0.6)
  # Decoupling's variant: FP = k3 only: P = R = 3/4.
  assert open_set.open_set_f_measure(
      _PRED, _LABEL, _SCORE, protocol='decouple', **kwargs
  ) == pytest.approx(0.75)
  # Macro over classes 0, 1, 2 and "open": F = 2/3, 1/2, 0, 2/5 -> 47/120.
  assert open_set.open_set_f_measure(
      _PRED, _LABEL, _SCORE, protocol='macro', **kwargs
  ) == pytest.approx(47 / 120)
  with pytest.raises(ValueError, match='protocol'):
    open_set.open_set_f_measure(_PRED, _LABEL, _SCORE, protocol='micro', **kwargs)


def test_open_set_perfect_separation_gives_one():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 5, 40)
  is_open = np.arange(40) >= 30
  scores = np.where(is_open, 0.2, 0.9)
  predictions = np.where(is_open, rng.integers(0, 5, 40), labels)
  for protocol in open_set.PROTOCOLS:
    assert (
        open_set.open_set_f_measure(
            predictions, labels, scores, is_open=is_open, threshold=0.5, protocol=protocol
        )
        == 1.0
    )


def test_f_measure_curve_and_threshold_selection():
  grid = [0.0, 0.25, 0.5, 0.58, 0.65, 0.95]
  for protocol in open_set.PROTOCOLS:
    thresholds, values = open_set.f_measure_curve(
        _PRED, _LABEL, _SCORE, is_open=_OPEN, thresholds=grid, protocol=protocol
    )
    loop = [
        open_set.open_set_f_measure(
            _PRED, _LABEL, _SCORE, is_open=_OPEN, threshold=t, protocol=protocol
        )
        for t in grid
    ]
    np.testing.assert_allclose(values, loop)
    best, f, curve = open_set.select_threshold(
        _PRED, _LABEL, _SCORE, is_open=_OPEN, thresholds=grid[::-1], protocol=protocol
    )
    assert f == max(loop) and best == grid[int(np.argmax(loop))]
    assert curve[best] == f
  # OLTR: at 0 all are accepted, TP 4 (k4 too), FP 2, FN 2 -> 2/3; at 0.58 (o1
  # rejected) TP 3, FP 3, FN 0 -> P 1/2, R 1 -> 2/3 as well; 0.5 gives 0.6, 0.65
  # (TP 2, FP 4, FN 0) 1/2. The tie goes to the smaller threshold.
  best, f, curve = open_set.select_threshold(_PRED, _LABEL, _SCORE, is_open=_OPEN, thresholds=grid)
  assert (best, f) == (0.0, pytest.approx(2 / 3))
  assert curve[0.58] == pytest.approx(2 / 3) and curve[0.65] == pytest.approx(0.5)
  # Default grid: the percentiles of the scores, one curve value each.
  thresholds, values = open_set.f_measure_curve(_PRED, _LABEL, _SCORE, is_open=_OPEN)
  assert thresholds.min() == _SCORE.min() and thresholds.max() == _SCORE.max()
  assert len(values) == len(thresholds)


def test_softmax_scores():
  scores, predictions = open_set.softmax_scores(np.array([[0.0, math.log(3.0)], [2.0, 2.0]]))
  np.testing.assert_allclose(scores, [0.75, 0.5])
  np.testing.assert_array_equal(predictions, [1, 0])
