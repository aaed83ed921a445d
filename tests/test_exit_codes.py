"""Exit codes of ``python -m ltjax.train`` for bad input, run as subprocesses.

A file that a run refuses to read (a tampered pickle) is bad input: the command
exits with 2 ("fix it, a retry fails again"), naming the file, not with 1 ("a
bug"). Each case spawns JAX (a few seconds): keep them few.
"""

import os
import pickle
import subprocess
import sys

import numpy as np

from helpers import REPO
from helpers import write_cifar_folder
from helpers import write_smuggling_pth
from ltjax.data import cifar_pickle
from ltjax.train import stopping


class SystemCall:
  """Pickles to a call of os.system: what a tampered file holds."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


def run_train(workdir, *overrides):
  """``python -m ltjax.train`` on the smoke recipe with ``overrides``, on the CPU."""
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  args = [
      sys.executable,
      '-m',
      'ltjax.train',
      '--config=configs/smoke.py',
      f'--workdir={workdir}',
      '--compilation_cache=',
      '--config.stage2.num_epochs=0',
      '--config.num_train_steps=2',
      *overrides,
  ]
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_tampered_cifar_pickle_exits_as_bad_input(tmp_path):
  write_cifar_folder(tmp_path / 'data', 'cifar10', 2, 1, np.random.default_rng(0))
  marker = tmp_path / 'pwned'
  tampered = tmp_path / 'data' / cifar_pickle.FOLDERS['cifar10'] / 'data_batch_1'
  tampered.write_bytes(pickle.dumps({b'data': SystemCall(f'touch {marker}')}, protocol=4))
  result = run_train(
      tmp_path / 'run',
      '--config.data.name=cifar10',
      f'--config.data.data_dir={tmp_path / "data"}',
      '--config.data.imbalance_ratio=0',
  )
  assert result.returncode == stopping.EXIT_BAD_INPUT, result.stderr[-3000:]
  assert f'{tampered}: refused to load the global posix.system' in result.stderr, result.stderr[
      -3000:
  ]
  assert 'read as data, not code' in result.stderr
  assert not marker.exists()


def test_a_pth_that_torch_would_refuse_exits_as_bad_input(tmp_path):
  # torch.load(weights_only=True) refuses it too: a global outside a plain state dict.
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pth'
  write_smuggling_pth(path, f'touch {marker}')
  result = run_train(
      tmp_path / 'run',
      '--config.data.name=synthetic',
      '--config.data.imbalance_ratio=4',
      '--config.data.synthetic.per_class=40',
      '--config.data.n_max=0',
      '--config.model.name=resnet10',
      '--config.model.width=8',
      f'--config.model.pretrained={path}',
  )
  assert result.returncode == stopping.EXIT_BAD_INPUT, result.stderr[-3000:]
  assert f'{path}: refused to load the global os.system' in result.stderr, result.stderr[-3000:]
  assert 'read as data, not code' in result.stderr
  assert not marker.exists()


def test_a_bad_flag_and_a_bad_eval_workdir_exit_as_bad_input(tmp_path):
  result = run_train(str(tmp_path / 'run'), '--config.optim.lr=fast')
  assert result.returncode == stopping.EXIT_BAD_INPUT, result.stderr[-2000:]
  assert 'Error (bad flag)' in result.stderr and 'optim.lr' in result.stderr
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  missing = str(tmp_path / 'no_such_run')
  result = subprocess.run(
      [sys.executable, '-m', 'ltjax.eval', f'--workdir={missing}', '--compilation_cache='],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == stopping.EXIT_BAD_INPUT, result.stderr[-2000:]
  assert missing in result.stderr
