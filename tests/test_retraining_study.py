"""Tests for ltjax.train.retraining_study: LORT's Table 1 on one tiny stage-1 model."""

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import REPO
from helpers import read_rows
from helpers import tiny_config
from ltjax import train
from ltjax.train import retraining_study
from ltjax.train.checkpoint import Checkpoints
from ltjax.train.checkpoint import load_config
from ltjax.train.final_adjustment import POSTHOC_FILE

METHODS = ['lort', 'tau_norm', 'post_hoc_la']
OVERRIDES = {'stage2.num_epochs': 1, 'posthoc.grid': (0.0, 0.5, 1.0)}


@pytest.fixture(scope='module')
def study(tmp_path_factory):
  """(stage-1 workdir, output dir, result, seconds) of one study of METHODS."""
  root = tmp_path_factory.mktemp('study')
  stage1 = str(root / 'stage1')
  config = tiny_config(
      **{
          'data.augment': 'none',
          'data.val_per_class': 5,
          'eval.many_threshold': 30,
          'eval.few_threshold': 15,
      }
  )
  train.train_and_evaluate(config, stage1)
  output = str(root / 'study')
  start = time.perf_counter()
  result = retraining_study.run_study(stage1, output, methods=METHODS, overrides=OVERRIDES)
  return stage1, output, result, time.perf_counter() - start


def latest_steps(output):
  steps = {}
  for name in METHODS:
    checkpoints = Checkpoints(os.path.join(output, name))
    try:
      steps[name] = checkpoints.latest_step()
    finally:
      checkpoints.close()
  return steps


def test_the_table_holds_each_methods_own_report(study):
  _, output, result, _ = study
  for name in (retraining_study.TABLE_FILE, retraining_study.TABLE_JSON, 'comparison.json'):
    assert os.path.getsize(os.path.join(output, name)) > 0
  assert os.path.getsize(os.path.join(output, 'logits_magnitude_comparison.png')) > 1000
  saved = json.load(open(os.path.join(output, retraining_study.TABLE_JSON)))
  assert list(saved['rows']) == METHODS and saved['rows'] == result['rows']
  for name, row in result['rows'].items():
    report = json.load(open(os.path.join(output, name, 'report', 'report.json')))
    for key in ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few'):
      assert row[key] == report[key], (name, key)
    assert row['logits_magnitude'] == report['logits_magnitude_groups']
    assert row['regularized_std'] == report['regularized_std_groups']
  lines = result['table'].splitlines()
  assert lines[1].split()[:3] == ['method', '|', 'all'] and lines[3].startswith('lort')
  assert f'{100 * result["rows"]["lort"]["accuracy"]:.2f}' in lines[3]


def test_validation_chosen_rows(study):
  stage1, output, result, _ = study
  rows = result['rows']
  # Post-hoc LA: the adjusted accuracies of run_stage's posthoc.json, tau from the grid.
  adjusted = json.load(open(os.path.join(output, 'post_hoc_la', POSTHOC_FILE)))
  assert rows['post_hoc_la']['balanced_accuracy'] == adjusted['metrics']['balanced_accuracy']
  assert rows['post_hoc_la']['value'] == adjusted['value'] in OVERRIDES['posthoc.grid']
  # tau-norm: tau in the config the row was evaluated with; no training (learning rate 0).
  tau_config = load_config(os.path.join(output, 'tau_norm'))
  assert tau_config.model.head == 'tau_norm' and tau_config.stage2.optim.lr == 0.0
  assert rows['tau_norm']['value'] == tau_config.model.head_tau in OVERRIDES['posthoc.grid']
  assert 'chosen on the validation split' in result['table']
  # Neither trains: the unadjusted accuracy is stage 1's final (= best) test accuracy.
  report = json.load(open(os.path.join(output, 'post_hoc_la', 'report', 'report.json')))
  stage1_test = [row for row in read_rows(stage1) if row['split'] == 'test'][-1]
  assert report['posthoc']['unadjusted']['accuracy'] == stage1_test['accuracy']


def test_a_second_run_retrains_nothing(study):
  stage1, output, result, _ = study
  before = latest_steps(output)
  again = retraining_study.run_study(stage1, output, methods=METHODS, overrides=OVERRIDES)
  assert latest_steps(output) == before  # No checkpoint was added: nothing was retrained.
  assert again['rows'] == result['rows']


def test_unknown_methods_fail_naming_the_valid_ones(study, tmp_path):
  stage1, _, _, _ = study
  with pytest.raises(ValueError, match='valid:.*vanilla_fc.*lort'):
    retraining_study.run_study(stage1, str(tmp_path), methods=['lort', 'crtt'])
  assert not os.listdir(tmp_path)


def test_the_launcher_names_the_valid_methods(study):
  stage1, _, _, _ = study
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', 'retraining_study.py')]
      + [f'--stage1_workdir={stage1}', '--methods=lort,crtt', '--compilation_cache='],
      capture_output=True,
      text=True,
      env=dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu'),
      timeout=120,
  )
  assert result.returncode != 0 and "['crtt']" in result.stderr
  assert 'vanilla_fc,crt,cosine' in result.stderr


def test_without_a_validation_split_the_chosen_rows_are_left_out_or_fail(study):
  stage1, _, _, _ = study
  config = load_config(stage1)
  no_val = {'data.val_per_class': 0}
  configs, notes = retraining_study.method_configs(config, None, no_val)
  assert list(configs) == [
      m for m in retraining_study.METHODS if m not in ('tau_norm', 'post_hoc_la')
  ]
  assert 'tau_norm, post_hoc_la' in notes[0] and 'data.val_per_class' in notes[0]
  with pytest.raises(ValueError, match='data.val_per_class'):
    retraining_study.method_configs(config, ['lort', 'tau_norm'], no_val)
