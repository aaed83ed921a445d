"""Tests for ltjax.train.workdir_report: a trained workdir -> its ltjax.eval report."""

import os

import jax
import numpy as np
import pytest

from configs import base
from helpers import tiny_two_stage_config
from ltjax import models
from ltjax import train
from ltjax.eval import report as ltjax_report
from ltjax.train import workdir_report

REQUIRED_KEYS = (
    'accuracy',
    'balanced_accuracy',
    'many',
    'medium',
    'few',
    'logits_magnitude',
    'regularized_std',
    'fdr',
    'feature_norm',
    'weight_norm',
    'nc1',
    'etf_distance',
)


def test_report_of_a_workdir_matches_the_training_evaluation(trained_two_stage):
  workdir, state, results = trained_two_stage
  report = workdir_report.report_for_workdir(
      os.path.relpath(os.path.join(workdir, 'stage2')), checkpoint='latest', sharpness_directions=2
  )
  for key in REQUIRED_KEYS + (
      'fdr_train',
      'nc1_train',
      'etf_distance_train',
      'cosine_similarity_train',
      'feature_norm_train',
  ):
    assert key in report, key
  assert report['meta']['step'] == int(state.step)
  np.testing.assert_allclose(report['per_class_accuracy'], results['per_class_accuracy'])
  for key in ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few'):
    assert report[key] == pytest.approx(results[key])
  # Per-class lists indexed by class; group summaries by training-count group.
  assert len(report['logits_magnitude']) == len(report['weight_norm']) == 10
  assert set(report['logits_magnitude_groups']) == {'many', 'medium', 'few'}
  assert len(report['logits_magnitude_deciles']) == 10
  # The weight norms are those of the trained classifier (a linear head).
  np.testing.assert_allclose(
      report['weight_norm'], np.linalg.norm(state.params['head']['kernel'], axis=0), rtol=1e-5
  )
  # Radius 0 of the sharpness curve is the unperturbed training loss: finite, and no
  # radius lowers the antithetic curve.
  for group in ('many', 'medium', 'few', 'all'):
    curve = report['sharpness'][group]
    assert np.all(np.diff(curve) >= -1e-6), (group, curve)
  assert 'batchnorm_scale' in report and report['batchnorm_scale']['all']['num'] > 0


def test_missing_workdir_config_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a workdir written by launch/train.py'):
    workdir_report.report_for_workdir(str(tmp_path))


@pytest.mark.parametrize('head', ['linear', 'lws', 'tau_norm', 'cosine'])
def test_affine_head_reads_the_effective_classifier(head):
  config = base.get_config()
  config.model.head = head
  model = models.build_model(config.model, 5)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.float32), train=False)
  params = jax.tree.map(
      lambda x: x + 0.3 * np.random.default_rng(1).normal(size=x.shape).astype(x.dtype),
      variables['params'],
  )
  state = train.TrainState(
      step=0,
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=(),
      rng=jax.random.PRNGKey(0),
      apply_fn=model.apply,
      tx=None,
  )
  features = np.random.default_rng(2).normal(size=(6, 128)).astype(np.float32)
  head_out = model.apply({'params': params}, features, method=train.steps.head_method)
  found = workdir_report.affine_head(state, 128)
  if head == 'cosine':
    assert found is None  # Normalised features: not affine.
    return
  kernel, bias = found
  np.testing.assert_allclose(features @ kernel + bias, head_out, rtol=1e-4, atol=1e-4)
  if head == 'linear':
    np.testing.assert_allclose(kernel, params['head']['kernel'], atol=1e-6)


def test_open_set_f_measure_on_held_out_classes(tmp_path):
  """Classes 8 and 9 never seen in training: their test images are the open set."""
  config = tiny_two_stage_config()
  config.stage2.num_epochs, config.num_train_steps = 0, 6
  config.data.open_classes = (8, 9)
  workdir = str(tmp_path / 'open')
  train.train_and_evaluate(config, workdir)
  report = workdir_report.report_for_workdir(workdir, checkpoint='latest', sharpness_directions=0)
  assert len(report['per_class_accuracy']) == 8 and report['sharpness'] is None
  open_set = report['open_set']
  assert open_set['closed_images'] == 8 * 40 and open_set['open_images'] == 2 * 40
  assert 0.0 < report['open_set_f_measure'] <= 1.0
  assert 0.0 <= open_set['f_measure_softmax'] <= 1.0  # OLTR's fixed softmax threshold.
  assert 'open F*' in ltjax_report.format_comparison({'run': report}).splitlines()[0]


def test_class_capped_subset_keeps_every_class():
  labels = np.repeat(np.arange(5), [100, 40, 10, 2, 1])
  keep = workdir_report.class_capped_subset(labels, 50)
  np.testing.assert_array_equal(np.bincount(labels[keep]), [18, 18, 10, 2, 1])  # k = 18.
  assert len(np.unique(keep)) == len(keep) == 49
  assert len(workdir_report.class_capped_subset(labels, 1000)) == len(labels)
