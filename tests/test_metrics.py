"""Evaluation metrics on hand-made predictions; cross-entropy against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import eval as ltjax_eval
from ltjax.losses import softmax_cross_entropy


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
  m = ltjax_eval.classification_metrics(np.array([0, 1]), np.array([0, 1]),
                                        np.array([500, 400]))
  assert np.isnan(m['few']) and m['many'] == 1.0
  table = ltjax_eval.format_table(m)
  assert 'balanced_accuracy' in table and '100.00' in table


def numpy_ce(logits, labels, ls=0.0, weights=None):
  logits = logits.astype(np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  c = logits.shape[-1]
  target = np.eye(c)[labels] * (1 - ls) + ls / c
  per = -(target * logp).sum(-1)
  if weights is None:
    return per, per.mean()
  w = weights[labels]
  return per * w, (per * w).sum() / w.sum()


@pytest.mark.parametrize('ls', [0.0, 0.1, 0.98])
@pytest.mark.parametrize('weighted', [False, True])
def test_cross_entropy_against_numpy(ls, weighted):
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 5, (16, 7)).astype(np.float32)
  logits[0] = [80, -80, 0, 0, 0, 0, 0]  # Extreme logits stay finite.
  labels = rng.integers(0, 7, 16)
  weights = rng.uniform(0.1, 3, 7) if weighted else None
  per, mean = numpy_ce(logits, labels, ls, weights)
  kwargs = dict(label_smoothing=ls, class_weights=weights)
  np.testing.assert_allclose(softmax_cross_entropy(logits, labels, **kwargs), per, rtol=1e-5,
                             atol=1e-5)
  # PyTorch's weighted mean: sum_i w_yi l_i / sum_i w_yi.
  np.testing.assert_allclose(softmax_cross_entropy(logits, labels, reduction='mean', **kwargs),
                             mean, rtol=1e-5)


def test_cross_entropy_gradient_is_softmax_minus_target():
  logits = jnp.array([[1.0, 2.0, -1.0]])
  grad = jax.grad(lambda z: softmax_cross_entropy(z, jnp.array([2]), reduction='sum'))(logits)
  np.testing.assert_allclose(grad, jax.nn.softmax(logits) - jnp.array([[0, 0, 1.0]]), rtol=1e-6)
