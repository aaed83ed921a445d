"""Tests for ltjax.eval.report: report.json, its plots and the comparison table."""

import json
import math
import os

import numpy as np
import pytest

from ltjax.eval import report as ltjax_report
from ltjax.train import workdir_report


def test_report_json_is_strict_json_and_plots_are_written(trained_two_stage, tmp_path):
  workdir, _, _ = trained_two_stage
  report = workdir_report.report_for_workdir(workdir, checkpoint='best', sharpness_directions=2)
  report['fdr'] = float('nan')  # NaN must become null, not the non-standard NaN token.
  paths = ltjax_report.write_report(report, str(tmp_path), title='stage 1')
  with open(tmp_path / 'report.json') as f:
    text = f.read()
  loaded = json.loads(text, parse_constant=lambda c: pytest.fail(f'non-JSON constant {c}'))
  assert loaded['fdr'] is None
  assert loaded['accuracy'] == pytest.approx(report['accuracy'])
  with np.load(tmp_path / 'matrices.npz') as matrices:
    np.testing.assert_allclose(
        matrices['class_cosine_matrix'], np.asarray(report['class_cosine_matrix'], float), atol=1e-6
    )
  for name in ('per_class_accuracy', 'logits_magnitude', 'norms', 'cosine_similarity', 'sharpness'):
    path = str(tmp_path / f'{name}.png')
    assert path in paths and os.path.getsize(path) > 1000


def test_comparison_table_lists_every_run():
  reports = {
      'ce': {
          'accuracy': 0.5,
          'balanced_accuracy': 0.5,
          'many': 0.9,
          'medium': 0.4,
          'few': 0.1,
          'fdr': 3.0,
          'nc1': 1.5,
          'etf_distance': 0.2,
      },
      'lort': {
          'accuracy': 0.6,
          'balanced_accuracy': 0.6,
          'many': 0.8,
          'medium': 0.6,
          'few': 0.4,
          'fdr': 4.0,
          'nc1': None,
          'etf_distance': 0.1,
      },
  }
  lines = ltjax_report.format_comparison(reports).splitlines()
  assert [line.split()[0] for line in lines[2:]] == ['ce', 'lort']
  assert '60.00' in lines[3] and 'n/a' in lines[3] and 'open-set' not in lines[0]
  assert math.isclose(float(lines[2].split('|')[6]), 3.0)
