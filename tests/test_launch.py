"""Tests for launch/train.py and launch/eval.py: the command lines, run as subprocesses.

The launchers run ``ltjax/train/__main__.py`` and ``ltjax/eval/__main__.py`` (``python -m
ltjax.train`` / ``ltjax.eval``); tests/test_package.py runs those from an installed wheel.
"""

import json
import os
import subprocess
import sys

from helpers import REPO


def run_launcher(script, *args, cwd=REPO):
  """``python launch/<script> args`` from the repository root, on the CPU even beside a GPU."""
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, os.path.join(REPO, 'launch', script), *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=cwd,
      timeout=300,
  )


def test_config_typo_names_the_nearest_key(tmp_path):
  result = run_launcher(
      'train.py', '--config=configs/smoke.py', '--config.optim.lrr=0.1', f'--workdir={tmp_path}'
  )
  assert result.returncode != 0
  assert 'Did you mean "lr" instead of "lrr"?' in result.stderr
  assert not os.listdir(tmp_path)  # Failed before creating anything.


def test_config_paths_resolve_from_another_directory(tmp_path):
  elsewhere, workdir = tmp_path / 'elsewhere', tmp_path / 'run'
  elsewhere.mkdir()
  # configs/smoke.py is not in the working directory: the checkout's recipe (ltjax/configs) is
  # loaded, and fails on the override's typo, as from the repository root.
  result = run_launcher(
      'train.py',
      '--config=configs/smoke.py',
      '--config.optim.lrr=0.1',
      f'--workdir={workdir}',
      cwd=elsewhere,
  )
  assert 'Did you mean "lr" instead of "lrr"?' in result.stderr, result.stderr[-3000:]
  result = run_launcher(
      'train.py', '--config=configs/smok.py', f'--workdir={workdir}', cwd=elsewhere
  )
  assert result.returncode == 2  # stopping.EXIT_BAD_INPUT: a retry fails again.
  assert "No config file 'configs/smok.py'" in result.stderr
  assert 'Did you mean configs/smoke.py?' in result.stderr
  assert not os.path.exists(workdir) and not os.listdir(elsewhere)


def test_launch_eval_compares_two_workdirs(trained_two_stage, tmp_path):
  workdir, _, _ = trained_two_stage
  out = tmp_path / 'compare'
  result = run_launcher(
      'eval.py',
      f'--workdir={workdir}',
      f'--workdir={workdir}/stage2',
      '--name=stage1',
      '--name=stage2',
      f'--output={out}',
      '--checkpoint=latest',
      '--sharpness_directions=2',
      '--compilation_cache=',
  )
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


def test_launch_eval_names_missing_steps_and_unwritable_outputs_first(trained_two_stage, tmp_path):
  workdir, _, _ = trained_two_stage
  result = run_launcher(
      'eval.py', f'--workdir={workdir}', '--checkpoint=99999', f'--output={tmp_path}'
  )
  assert result.returncode != 0
  assert (
      'No checkpoint at step 99999' in result.stderr and 'checkpoints/ holds steps' in result.stderr
  )
  assert "Use one of those steps, or 'latest' or 'best'" in result.stderr
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  result = run_launcher('eval.py', f'--workdir={workdir}', f'--output={blocker}/report')
  assert result.returncode != 0
  assert f'Cannot write the report to {blocker}/report' in result.stderr
  assert 'Evaluating' not in result.stderr  # Checked before anything was computed.
