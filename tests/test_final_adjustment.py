"""Tests for ltjax.train.final_adjustment: post-hoc adjustment chosen on validation only."""

import json
import os

import numpy as np
import pytest

from helpers import read_rows
from helpers import tiny_config
from ltjax import train
from ltjax.eval import posthoc
from ltjax.train import final_adjustment

COUNTS = np.array([90, 30, 10])


def planted(gamma_best, n=60, seed=0):
  """Logits whose balanced accuracy peaks under multiplicative adjustment at ``gamma_best``."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 3
  # Adjusted logits z * pi^-gamma_best are correct with a margin; raw logits are not.
  target = np.eye(3)[labels] * 2.0 + rng.normal(scale=0.1, size=(n, 3)) + 1.0
  logits = target / np.exp(-gamma_best * posthoc.log_prior(COUNTS))
  return {'logits': logits.astype(np.float32), 'label': labels}


def test_the_value_is_chosen_on_validation_and_applied_to_test():
  val, test = planted(1.5), planted(0.0, seed=1)  # Test alone would choose about 0.
  value, curve, adjusted = final_adjustment.choose_and_apply(
      'multiplicative', val, test, COUNTS, grid=(0.0, 0.5, 1.0, 1.5)
  )
  assert value == 1.5 and curve[1.5] == 1.0
  test_best, _ = posthoc.search_multiplicative(
      test['logits'], test['label'], COUNTS, (0.0, 0.5, 1.0, 1.5)
  )
  assert test_best != value  # The planted difference: the test split did not decide.
  np.testing.assert_allclose(
      adjusted, posthoc.multiplicative_adjust(test['logits'], COUNTS, 1.5), rtol=1e-6
  )
  value, _, adjusted = final_adjustment.choose_and_apply(
      'additive', val, test, COUNTS, grid=(0.0, 1.0)
  )
  np.testing.assert_allclose(adjusted, posthoc.additive_adjust(test['logits'], COUNTS, value))
  with pytest.raises(ValueError, match='posthoc.method'):
    final_adjustment.choose_and_apply('mult', val, test, COUNTS)


def test_a_run_records_the_adjusted_table_beside_the_unadjusted(tmp_path, capsys):
  config = tiny_config(
      num_train_steps=6,
      **{'data.val_per_class': 5, 'posthoc.method': 'multiplicative', 'posthoc.grid': (0.0, 1.0)},
  )
  workdir = str(tmp_path)
  _, results = train.train_and_evaluate(config, workdir)
  adjusted = results['posthoc']
  assert adjusted['method'] == 'multiplicative' and adjusted['value'] in (0.0, 1.0)
  assert set(adjusted['curve']) == {0.0, 1.0}
  saved = json.load(open(os.path.join(workdir, final_adjustment.POSTHOC_FILE)))
  assert saved['value'] == adjusted['value']
  assert saved['metrics']['balanced_accuracy'] == adjusted['metrics']['balanced_accuracy']
  row = [r for r in read_rows(workdir) if r['split'] == 'test_posthoc']
  assert len(row) == 1 and row[0]['posthoc_value'] == adjusted['value']
  out = capsys.readouterr().out
  assert 'Without post-hoc adjustment' in out and 'chosen on the validation split' in out
  if adjusted['value'] == 0.0:  # No adjustment: the same table.
    assert adjusted['metrics']['accuracy'] == results['accuracy']


def test_without_a_validation_split_it_fails_before_training(tmp_path):
  config = tiny_config(**{'posthoc.method': 'additive'})
  with pytest.raises(ValueError, match='data.val_per_class'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(os.path.join(str(tmp_path), 'checkpoints'))


def test_tau_norm_is_chosen_on_validation_with_the_heads_bias_kept():
  rng = np.random.default_rng(0)
  kernel = np.diag([4.0, 2.0, 1.0])  # Head classes have the larger vectors.
  bias = np.array([0.1, 0.0, -0.1])
  labels = np.arange(60) % 3
  feats = np.eye(3)[labels] * 0.9 + rng.normal(scale=0.05, size=(60, 3)) + 0.3
  val = test = {'logits': feats @ kernel + bias, 'label': labels}
  value, curve, adjusted = final_adjustment.choose_and_apply(
      'tau_norm', val, test, COUNTS, grid=(0.0, 0.5, 1.0), head=(kernel, bias)
  )
  assert curve[0.0] < 1.0 and value > 0.0 and curve[value] == 1.0  # Normalising fixes it.
  norms = np.diag(kernel) ** value
  np.testing.assert_allclose(adjusted, feats @ (kernel / norms) + bias, rtol=1e-5)
