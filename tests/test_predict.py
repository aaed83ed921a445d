"""Tests for ltjax.train.predict: padded fixed-shape batches, predictions in order, metrics."""

import chex
import jax
import ml_collections
import numpy as np
import pytest

from helpers import synthetic_data_config
from ltjax import data
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MASK
from ltjax.eval import metrics
from ltjax.train import predict
from ltjax.train import sharding

MESHES = {
    '1_device': lambda: sharding.make_mesh(jax.devices()[:1]),
    '8_devices': lambda: sharding.make_mesh(),
}


def test_array_batches_pad_to_a_fixed_shape_with_mask_false_rows():
  features = np.arange(60, dtype=np.float32).reshape(20, 3)
  labels = np.arange(20, dtype=np.int32) + 100
  batches = list(predict.array_batches({'features': features, LABEL: labels}, 8))
  assert len(batches) == 3
  for batch in batches:
    assert set(batch) == {'features', LABEL, MASK}
    chex.assert_shape([batch['features'], batch[LABEL], batch[MASK]], [(8, 3), (8,), (8,)])
  np.testing.assert_array_equal(
      [b[MASK] for b in batches], [[True] * 8, [True] * 8, [True] * 4 + [False] * 4]
  )
  np.testing.assert_array_equal(np.concatenate([b['features'][b[MASK]] for b in batches]), features)
  np.testing.assert_array_equal(np.concatenate([b[LABEL][b[MASK]] for b in batches]), labels)


def test_image_batches_are_this_process_eval_batches():
  dataset = data.load_datasets(synthetic_data_config()).test
  got = list(predict.image_batches(dataset, batch_size=64))
  expected = list(data.eval_batches(dataset, global_batch_size=64))
  assert len(got) == len(expected) == 7  # 400 images, the last batch padded.
  for a, b in zip(got, expected):
    chex.assert_trees_all_equal(a, b)


def test_an_eval_batch_size_the_devices_do_not_divide_rounds_up_to_them():
  assert jax.device_count() == 8
  assert [predict.eval_batch_size(n) for n in (1, 8, 100, 1000)] == [8, 8, 104, 1000]
  dataset = data.load_datasets(synthetic_data_config()).test
  batches = list(predict.image_batches(dataset, batch_size=100))
  assert {len(b[LABEL]) for b in batches} == {104}
  features = np.arange(60, dtype=np.float32).reshape(20, 3)
  batches = list(predict.array_batches({'features': features, LABEL: np.arange(20)}, 6))
  assert [int(b[MASK].sum()) for b in batches] == [8, 8, 4]


@pytest.mark.parametrize('mesh', sorted(MESHES))
def test_predict_drops_padded_rows_and_keeps_the_order(mesh):
  mesh = MESHES[mesh]()
  rng = np.random.default_rng(0)
  features = rng.normal(size=(21, 3)).astype(np.float32)
  labels = rng.integers(0, 5, 21).astype(np.int32)
  offset = np.float32(0.5)

  @jax.jit
  def step(state, inputs):
    assert set(inputs) == {'features'}  # LABEL and MASK never reach the step.
    return {'scaled': inputs['features'] * 2 + state, 'total': inputs['features'].sum(-1)}

  out = predict.predict(
      offset, step, predict.array_batches({'features': features, LABEL: labels}, 8), mesh=mesh
  )
  assert set(out) == {'scaled', 'total', LABEL}
  np.testing.assert_allclose(out['scaled'], features * 2 + offset, rtol=1e-6)
  np.testing.assert_allclose(out['total'], features.sum(-1), rtol=1e-6)
  np.testing.assert_array_equal(out[LABEL], labels)


@pytest.mark.parametrize('mesh', sorted(MESHES))
def test_evaluate_is_classification_metrics_of_the_argmax(mesh):
  mesh = MESHES[mesh]()
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(45, 5)).astype(np.float32)
  labels = rng.integers(0, 5, 45).astype(np.int32)
  logits[np.arange(0, 45, 2), labels[::2]] += 2.0  # Better than chance, not perfect.
  train_counts = np.array([100, 40, 20, 10, 5])
  eval_config = ml_collections.ConfigDict({'many_threshold': 30, 'few_threshold': 15})
  step = jax.jit(
      lambda state, inputs: {'logits': inputs['logits'], 'features': inputs['logits'][:, :2]}
  )
  got = predict.evaluate(
      None,
      step,
      predict.array_batches({'logits': logits, LABEL: labels}, 16),
      mesh=mesh,
      train_counts=train_counts,
      eval_config=eval_config,
  )
  expected = metrics.classification_metrics(
      np.argmax(logits, -1), labels, train_counts, many_threshold=30, few_threshold=15
  )
  assert 0.3 < expected['accuracy'] < 1.0
  assert not any(np.isnan(expected[g]) for g in ('many', 'medium', 'few'))
  np.testing.assert_equal(got, expected)
