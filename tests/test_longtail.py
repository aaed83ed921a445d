"""Tests for ltjax.data.longtail: long-tail profiles, subsampling, hold-out and class groups."""

import numpy as np
import pytest

from ltjax import data


def test_long_tail_counts_fashion_mnist_default():
  counts = data.long_tail_counts(10, 1000, 100)
  np.testing.assert_array_equal(counts, [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10])
  groups = data.class_groups(counts)
  assert [int(groups[g].sum()) for g in ('many', 'medium', 'few')] == [5, 3, 2]


@pytest.mark.parametrize(
    'num_classes,ratio,profile,total,smallest',
    [
        (100, 200, 'exp', 9502, 2),
        (100, 100, 'exp', 10847, 5),
        (100, 50, 'exp', 12608, 10),
        (100, 10, 'exp', 19573, 50),
        (10, 200, 'exp', 11203, 25),
        (10, 100, 'exp', 12406, 50),
        (10, 50, 'exp', 13996, None),
        (10, 10, 'exp', 20431, None),
        (100, 100, 'step', 25250, 5),
        (100, 10, 'step', 27500, 50),
        (10, 100, 'step', 25250, 50),
        (10, 10, 'step', 27500, 500),
    ],
)
def test_long_tail_counts_match_the_reference_table(num_classes, ratio, profile, total, smallest):
  counts = data.long_tail_counts(num_classes, 50000 // num_classes, ratio, profile)
  assert counts.sum() == total
  if smallest is not None:
    assert counts.min() == smallest


def test_long_tail_counts_reject_bad_profiles():
  for ratio in (0.5, 1.0):
    with pytest.raises(ValueError, match='imbalance_ratio must be > 1'):
      data.long_tail_counts(10, 100, ratio)
  with pytest.raises(ValueError, match='no samples'):
    data.long_tail_counts(10, 5, 100)
  with pytest.raises(ValueError, match='Unknown long-tail profile'):
    data.long_tail_counts(10, 100, 10, 'linear')


def test_long_tail_indices_selection_modes():
  labels = np.tile(np.arange(3), 10)  # 10 per class, interleaved.
  counts = np.array([6, 3, 1])
  first = data.long_tail_indices(labels, counts, selection='first')
  # Class 0 sits at 0, 3, 6, ...; class 1 at 1, 4, ...; class 2 at 2, 5, ...
  np.testing.assert_array_equal(first, [0, 1, 2, 3, 4, 6, 7, 9, 12, 15])
  shuffled = data.long_tail_indices(labels, counts, selection='shuffle', seed=1)
  np.testing.assert_array_equal(np.bincount(labels[shuffled]), counts)
  np.testing.assert_array_equal(
      shuffled, data.long_tail_indices(labels, counts, selection='shuffle', seed=1)
  )
  assert not np.array_equal(
      shuffled, data.long_tail_indices(labels, counts, selection='shuffle', seed=2)
  )


def test_hold_out_first_selection_takes_the_last_samples():
  labels = np.tile(np.arange(2), 6)  # Class 0 at even, class 1 at odd indices.
  keep, held = data.hold_out_indices(labels, 2, selection='first')
  np.testing.assert_array_equal(held, [8, 9, 10, 11])
  np.testing.assert_array_equal(keep, np.arange(8))
  with pytest.raises(ValueError, match='would leave none'):
    data.hold_out_indices(labels, 6)
