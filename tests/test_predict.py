"""Tests for ltjax.train.predict: padded fixed-shape batches, predictions in order, metrics."""

import chex
import jax
import ml_collections
import numpy as np
import optax
import pytest

from configs import base
from helpers import synthetic_data_config
from ltjax import data
from ltjax import models
from ltjax import train
from ltjax.data.batch_keys import FEATURES
from ltjax.data.batch_keys import FLIPPED
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MASK
from ltjax.eval import metrics
from ltjax.train import predict
from ltjax.train import sharding
from ltjax.train import steps

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


def test_evaluate_adds_the_single_view_balanced_accuracy():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(40, 4)).astype(np.float32)
  single = rng.normal(size=(40, 4)).astype(np.float32)
  labels = rng.integers(0, 4, 40).astype(np.int32)
  train_counts = np.array([50, 30, 20, 10])
  step = jax.jit(
      lambda state, inputs: {'logits': inputs['logits'], predict.SINGLE_VIEW_LOGITS: inputs['s']}
  )
  got = predict.evaluate(
      None,
      step,
      predict.array_batches({'logits': logits, 's': single, LABEL: labels}, 16),
      mesh=mesh,
      train_counts=train_counts,
      eval_config=ml_collections.ConfigDict({'many_threshold': 30, 'few_threshold': 15}),
  )
  # The reported metrics are those of 'logits'; the single-view number rides beside them.
  expected = metrics.classification_metrics(
      np.argmax(logits, -1), labels, train_counts, many_threshold=30, few_threshold=15
  )
  assert got.pop(predict.SINGLE_VIEW_BALANCED_ACCURACY) == pytest.approx(
      metrics.classification_metrics(np.argmax(single, -1), labels, train_counts)[
          'balanced_accuracy'
      ]
  )
  np.testing.assert_equal(got, expected)


def flip_test_state(mesh):
  config = base.get_config()
  model = models.build_model(config.model, 10)
  return train.create_train_state(model, optax.sgd(0.1), input_shape=(28, 28, 1), seed=0, mesh=mesh)


def test_flip_eval_step_is_flip_tta_plus_the_unflipped_logits():
  mesh = sharding.make_mesh()
  state = flip_test_state(mesh)
  dataset = data.load_datasets(synthetic_data_config()).test
  batch = next(iter(predict.image_batches(dataset, batch_size=64)))
  flip_and_single = steps.make_eval_step(state, mesh, flip_tta=True, single_view=True)
  both = predict.predict(state, flip_and_single, [batch], mesh=mesh)
  tta = predict.predict(state, steps.make_eval_step(state, mesh, flip_tta=True), [batch], mesh=mesh)
  plain = predict.predict(state, steps.make_eval_step(state, mesh), [batch], mesh=mesh)
  np.testing.assert_allclose(both['logits'], tta['logits'], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      both[predict.SINGLE_VIEW_LOGITS], plain['logits'], rtol=1e-6, atol=1e-6
  )
  assert not np.allclose(tta['logits'], plain['logits'])  # The flip matters on gratings.


def test_cached_head_single_view_step_drops_the_flipped_features():
  mesh = sharding.make_mesh()
  rng = np.random.default_rng(3)
  features = rng.normal(size=(24, 5)).astype(np.float32)
  flipped = rng.normal(size=(24, 5)).astype(np.float32)

  @jax.jit
  def head_step(state, inputs):
    logits = inputs[FEATURES] @ state
    if FLIPPED in inputs:
      logits = (logits + inputs[FLIPPED] @ state) / 2
    return {'logits': logits}

  kernel = rng.normal(size=(5, 3)).astype(np.float32)
  out = predict.predict(
      kernel,
      predict.with_single_view_head(head_step),
      predict.array_batches({FEATURES: features, FLIPPED: flipped, LABEL: np.zeros(24, int)}, 8),
      mesh=mesh,
  )
  np.testing.assert_allclose(out['logits'], (features + flipped) @ kernel / 2, rtol=1e-5)
  np.testing.assert_allclose(out[predict.SINGLE_VIEW_LOGITS], features @ kernel, rtol=1e-5)
