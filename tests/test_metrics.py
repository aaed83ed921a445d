"""Tests for ltjax.eval.metrics: accuracy, balanced accuracy and groups on hand-made predictions."""

import numpy as np
import pytest

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
