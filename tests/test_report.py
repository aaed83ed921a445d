"""The evaluation report: from a trained workdir to report.json, plots and comparisons."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import base
from conftest import REPO
from conftest import tiny_config
from ltjax import models
from ltjax import train
from ltjax.eval import report as ltjax_report
from ltjax.train import workdir_report

REQUIRED_KEYS = ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few', 'logits_magnitude',
                 'regularized_std', 'fdr', 'feature_norm', 'weight_norm', 'nc1', 'etf_distance')



def tiny_two_stage_config():
  """tiny_config with all three class groups and one stage-2 epoch (cRT head)."""
  return tiny_config(**{'data.augment': 'none', 'eval.many_threshold': 30,
                        'eval.few_threshold': 15, 'stage2.num_epochs': 1,
                        'stage2.head': 'reinit'})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('report') / 'run')
  state, results = train.train_and_evaluate(tiny_two_stage_config(), workdir)
  return workdir, jax.device_get(state), results


def test_report_of_a_workdir_matches_the_training_evaluation(trained):
  workdir, state, results = trained
  report = workdir_report.report_for_workdir(os.path.relpath(os.path.join(workdir, 'stage2')),
                                         checkpoint='latest',
                                         sharpness_directions=2)
  for key in REQUIRED_KEYS + ('fdr_train', 'nc1_train', 'etf_distance_train',
                              'cosine_similarity_train', 'feature_norm_train'):
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
  np.testing.assert_allclose(report['weight_norm'],
                             np.linalg.norm(state.params['head']['kernel'], axis=0), rtol=1e-5)
  # Radius 0 of the sharpness curve is the unperturbed training loss: finite, and no
  # radius lowers the antithetic curve.
  for group in ('many', 'medium', 'few', 'all'):
    curve = report['sharpness'][group]
    assert np.all(np.diff(curve) >= -1e-6), (group, curve)
  assert 'batchnorm_scale' in report and report['batchnorm_scale']['all']['num'] > 0


def test_report_json_is_strict_json_and_plots_are_written(trained, tmp_path):
  workdir, _, _ = trained
  report = workdir_report.report_for_workdir(workdir, checkpoint='best', sharpness_directions=2)
  report['fdr'] = float('nan')  # NaN must become null, not the non-standard NaN token.
  paths = ltjax_report.write_report(report, str(tmp_path), title='stage 1')
  with open(tmp_path / 'report.json') as f:
    text = f.read()
  loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f'non-JSON constant {c}'))
  assert loaded['fdr'] is None
  assert loaded['accuracy'] == pytest.approx(report['accuracy'])
  with np.load(tmp_path / 'matrices.npz') as matrices:
    np.testing.assert_allclose(matrices['class_cosine_matrix'],
                               np.asarray(report['class_cosine_matrix'], float), atol=1e-6)
  for name in ('per_class_accuracy', 'logits_magnitude', 'norms', 'cosine_similarity',
               'sharpness'):
    path = str(tmp_path / f'{name}.png')
    assert path in paths and os.path.getsize(path) > 1000


def test_launch_eval_compares_two_workdirs(trained, tmp_path):
  workdir, _, _ = trained
  out = tmp_path / 'compare'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'eval.py'), f'--workdir={workdir}',
       f'--workdir={workdir}/stage2', '--name=stage1', '--name=stage2', f'--output={out}',
       '--checkpoint=latest', '--sharpness_directions=2', '--compilation_cache='],
      capture_output=True, text=True, cwd=REPO, timeout=300,
      env={**os.environ, 'XLA_FLAGS': '', 'JAX_PLATFORMS': 'cpu'})  # CPU even beside a GPU.
  assert result.returncode == 0, result.stderr[-3000:]
  table = (out / 'comparison.txt').read_text().splitlines()
  assert table[0].split()[0] == 'run' and len(table) == 4
  assert table[2].startswith('stage1') and table[3].startswith('stage2')
  assert (out / '00_stage1' / 'report.json').exists()
  assert (out / '01_stage2' / 'report.json').exists()
  for name in ('per_class_comparison', 'logits_magnitude_comparison', 'sharpness_comparison'):
    assert os.path.getsize(out / f'{name}.png') > 1000
  compared = json.loads((out / 'comparison.json').read_text())
  assert set(compared) == {'stage1', 'stage2'}


def test_missing_workdir_config_says_what_to_do(tmp_path):
  with pytest.raises(FileNotFoundError, match='not a workdir written by launch/train.py'):
    workdir_report.report_for_workdir(str(tmp_path))


@pytest.mark.parametrize('head', ['linear', 'lws', 'tau_norm', 'cosine'])
def test_affine_head_reads_the_effective_classifier(head):
  config = base.get_config()
  config.model.head = head
  model = models.build_model(config.model, 5)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.float32),
                         train=False)
  params = jax.tree.map(lambda x: x + 0.3 * np.random.default_rng(1).normal(size=x.shape)
                        .astype(x.dtype), variables['params'])
  state = train.TrainState(step=0, params=params, batch_stats=variables.get('batch_stats', {}),
                           opt_state=(), rng=jax.random.PRNGKey(0), apply_fn=model.apply,
                           tx=None)
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


def test_comparison_table_lists_every_run():
  reports = {'ce': {'accuracy': 0.5, 'balanced_accuracy': 0.5, 'many': 0.9, 'medium': 0.4,
                    'few': 0.1, 'fdr': 3.0, 'nc1': 1.5, 'etf_distance': 0.2},
             'lort': {'accuracy': 0.6, 'balanced_accuracy': 0.6, 'many': 0.8, 'medium': 0.6,
                      'few': 0.4, 'fdr': 4.0, 'nc1': None, 'etf_distance': 0.1}}
  lines = ltjax_report.format_comparison(reports).splitlines()
  assert [line.split()[0] for line in lines[2:]] == ['ce', 'lort']
  assert '60.00' in lines[3] and 'n/a' in lines[3] and 'open-set' not in lines[0]
  assert math.isclose(float(lines[2].split('|')[6]), 3.0)


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
