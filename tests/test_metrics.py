"""Tests for ltjax.eval.metrics: accuracy, balanced accuracy and groups on hand-made predictions."""

import numpy as np
import pytest

from configs import base
from ltjax import eval as ltjax_eval


def test_metrics_on_hand_made_predictions():
  train_counts = np.array([500, 150, 60, 30, 10])  # many, many, medium, medium, few
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
  preds = np.array([0, 0, 0, 1, 1, 0, 2, 2, 0, 0, 4, 0])
  m = ltjax_eval.classification_metrics(preds, labels, train_counts)
  per_class = [0.75, 0.5, 1.0, 0.0, 0.5]
  np.testing.assert_allclose(m['per_class_accuracy'], per_class)
  assert m['accuracy'] == pytest.approx(7 / 12)
  assert m['balanced_accuracy'] == pytest.approx(np.mean(per_class))
  assert m['many'] == pytest.approx(0.625)
  assert m['medium'] == pytest.approx(0.5)
  assert m['few'] == pytest.approx(0.5)


def test_group_thresholds_are_strict_and_configurable():
  train_counts = np.array([101, 100, 20, 19])
  labels = preds = np.arange(4)
  m = ltjax_eval.classification_metrics(preds, labels, train_counts)
  groups = ltjax_eval.metrics.class_groups(train_counts)
  assert groups['many'].tolist() == [True, False, False, False]
  assert groups['few'].tolist() == [False, False, False, True]
  # CC-SAM's inclusive thresholds: many >= 100, few <= 20.
  cc = ltjax_eval.metrics.class_groups(train_counts, many_threshold=99, few_threshold=21)
  assert cc['many'].tolist() == [True, True, False, False]
  assert cc['few'].tolist() == [False, False, True, True]
  assert m['medium'] == 1.0


def test_empty_group_is_nan_and_table_formats():
  m = ltjax_eval.classification_metrics(np.array([0, 1]), np.array([0, 1]), np.array([500, 400]))
  assert np.isnan(m['few']) and m['many'] == 1.0
  table = ltjax_eval.format_table(m)
  assert 'balanced_accuracy' in table and '100.00' in table


# Ties: three classes with 20 straddle the many / medium boundary of sizes (3, 3).
TIED_COUNTS = np.array([5, 50, 20, 50, 8, 20, 20, 1])


def test_rank_groups_sort_by_count_and_break_ties_by_class_index():
  groups = ltjax_eval.metrics.class_groups(TIED_COUNTS, groups='rank', group_sizes=(3, 3))
  # Descending, stable: 1, 3 (50), 2, 5, 6 (20), 4 (8), 0 (5), 7 (1).
  assert groups['many'].tolist() == [False, True, True, True, False, False, False, False]
  assert groups['medium'].tolist() == [False, False, False, False, True, True, True, False]
  assert groups['few'].tolist() == [True, False, False, False, False, False, False, True]
  edge = ltjax_eval.metrics.rank_groups(TIED_COUNTS, (0, 8))
  assert not edge['many'].any() and edge['medium'].all() and not edge['few'].any()


def test_rank_groups_of_sorted_counts_are_saddle_index_ranges():
  # Saddle re-indexes classes by descending count and slices [0, m), [m, m + k), [m + k, C).
  counts = np.sort(np.random.default_rng(0).integers(1, 30, 50))[::-1]
  groups = ltjax_eval.metrics.rank_groups(counts, (12, 20))
  index = np.arange(50)
  assert groups['many'].tolist() == (index < 12).tolist()
  assert groups['medium'].tolist() == ((index >= 12) & (index < 32)).tolist()
  assert groups['few'].tolist() == (index >= 32).tolist()


def test_rank_group_accuracy_is_the_mean_of_its_classes_accuracies():
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7])
  preds = np.array([0, 0, 1, 0, 0, 0, 3, 3, 4, 0, 5, 5, 0, 0, 7, 0])
  per_class = np.array([1.0, 0.5, 0.0, 1.0, 0.5, 1.0, 0.0, 0.5])
  m = ltjax_eval.classification_metrics(
      preds, labels, TIED_COUNTS, groups='rank', group_sizes=(3, 3)
  )
  np.testing.assert_allclose(m['per_class_accuracy'], per_class)
  assert m['many'] == pytest.approx(np.mean(per_class[[1, 2, 3]]))
  assert m['medium'] == pytest.approx(np.mean(per_class[[4, 5, 6]]))
  assert m['few'] == pytest.approx(np.mean(per_class[[0, 7]]))
  # The threshold split of the same counts differs (many_threshold=20: 1, 3 only).
  by_threshold = ltjax_eval.classification_metrics(
      preds, labels, TIED_COUNTS, many_threshold=20, few_threshold=6
  )
  assert by_threshold['many'] == pytest.approx(0.75)
  # A class absent from the test set is left out of its group.
  keep = labels != 2
  m = ltjax_eval.classification_metrics(
      preds[keep], labels[keep], TIED_COUNTS, groups='rank', group_sizes=(3, 3)
  )
  assert m['many'] == pytest.approx(0.75)


@pytest.mark.parametrize('sizes', [(5, 4), (3,), (3, 3, 2), (-1, 3), (2.5, 3)])
def test_bad_group_sizes_name_the_key(sizes):
  with pytest.raises(ValueError, match=r'config.eval.group_sizes=.*8 classes'):
    ltjax_eval.metrics.class_groups(TIED_COUNTS, groups='rank', group_sizes=sizes)


def test_unknown_grouping_and_group_options():
  with pytest.raises(ValueError, match="Unknown config.eval.groups 'ranks'"):
    ltjax_eval.metrics.class_groups(TIED_COUNTS, groups='ranks')
  config = base.get_config()
  assert ltjax_eval.metrics.group_options(config.eval) == {
      'groups': 'threshold',
      'group_sizes': (),
      'many_threshold': 100,
      'few_threshold': 20,
  }
  config.eval.groups, config.eval.group_sizes = 'rank', (3, 3)
  m = ltjax_eval.classification_metrics(
      np.arange(8), np.arange(8), TIED_COUNTS, **ltjax_eval.metrics.group_options(config.eval)
  )
  assert m['many'] == m['medium'] == m['few'] == 1.0
  table = ltjax_eval.metrics.format_per_class(
      [1.0] * 8, TIED_COUNTS, **ltjax_eval.metrics.group_options(config.eval)
  )
  assert [line.split('|')[2].strip() for line in table.splitlines()[1:]] == [
      'few',
      'many',
      'many',
      'many',
      'medium',
      'medium',
      'medium',
      'few',
  ]
