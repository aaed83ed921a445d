"""ltjax.train.stopping: SIGTERM to a real training process, the lock it holds, exit codes."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import orbax.checkpoint as ocp
import pytest

from helpers import REPO
from ltjax import train
from ltjax.train import stopping
from ltjax.train.workdir_lock import WorkdirInUseError

# A run long enough to be stopped in the middle of an epoch: synthetic gratings, small CNN.
CONFIG = """
from configs import base


def get_config():
  config = base.get_config()
  config.data.name = 'synthetic'
  config.data.synthetic.per_class = 40
  config.data.imbalance_ratio = 4.0
  config.batch_size = 8
  config.eval_batch_size = 200
  config.num_epochs = 1
  config.num_train_steps = {steps}
  config.log_every_steps = 5
  config.eval_every_epochs = 100
  config.progress_bar = False
  return config
"""


def launch(config_file, workdir, *extra, wait=True):
  args = [sys.executable, 'launch/train.py', f'--config={config_file}', f'--workdir={workdir}']
  args += ['--compilation_cache=', *extra]
  process = subprocess.Popen(
      args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  if wait:
    out, _ = process.communicate(timeout=300)
    return process.returncode, out
  return process


def last_step(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return 0
  steps = [json.loads(line)['step'] for line in open(path) if line.strip().endswith('}')]
  return max(steps, default=0)


def final_params(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  restored = ocp.PyTreeCheckpointer().restore(path)
  return {k: restored[k] for k in ('step', 'params', 'batch_stats', 'opt_state', 'rng')}


def test_sigterm_saves_exits_75_and_the_rerun_equals_an_uninterrupted_run(tmp_path):
  steps = 200
  config_file = tmp_path / 'run_config.py'
  config_file.write_text(CONFIG.format(steps=steps))
  stopped = str(tmp_path / 'stopped')
  process = launch(config_file, stopped, wait=False)
  deadline = time.time() + 240
  while last_step(stopped) < 40:  # Well into training (an epoch is ~19 steps).
    assert process.poll() is None and time.time() < deadline, process.communicate()[0]
    time.sleep(0.2)

  # A second run on the same workdir fails fast, naming the holder, and writes nothing.
  before = sorted(os.listdir(stopped))
  spec_globals = {}
  exec(CONFIG.format(steps=steps), spec_globals)  # pylint: disable=exec-used
  with pytest.raises(WorkdirInUseError, match=rf'in use by another run: .*"pid": {process.pid}'):
    train.train_and_evaluate(spec_globals['get_config'](), stopped)
  assert sorted(os.listdir(stopped)) == before

  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == stopping.EXIT_STOPPED, out
  assert 'Rerun the same command to resume' in out
  saved = sorted(int(s) for s in os.listdir(os.path.join(stopped, 'checkpoints')))
  assert saved and 40 <= saved[-1] < steps  # Saved where it stopped, not at an evaluation.
  assert not os.path.exists(os.path.join(stopped, 'results.json'))

  rc, out = launch(config_file, stopped)
  assert rc == 0, out
  # The same config, uninterrupted, in this process.
  train.train_and_evaluate(spec_globals['get_config'](), str(tmp_path / 'uninterrupted'))
  chex.assert_trees_all_equal(
      final_params(stopped, steps), final_params(str(tmp_path / 'uninterrupted'), steps)
  )
  rows = [json.loads(line) for line in open(os.path.join(stopped, 'metrics.jsonl'))]
  keys = [(r['split'], r['step']) for r in rows]
  assert len(keys) == len(set(keys))  # No row twice after the resume.


def test_exit_codes_for_bad_input(tmp_path):
  config_file = tmp_path / 'run_config.py'
  config_file.write_text(CONFIG.format(steps=4))
  rc, out = launch(config_file, str(tmp_path / 'run'), '--config.batch_size=0')
  assert rc == stopping.EXIT_BAD_INPUT, out
  assert 'config.batch_size=0 must be > 0' in out
  rc, out = launch(config_file, '')
  assert rc == stopping.EXIT_BAD_INPUT and '--workdir is empty' in out, out


def test_a_request_is_seen_after_the_step_and_a_second_ctrl_c_stops_at_once():
  with stopping.StopRequests() as stops:
    assert stops.requested(1, sync=True) is None
    os.kill(os.getpid(), signal.SIGTERM)
    assert stops.requested(2, sync=False) == 'SIGTERM'
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Restored.
  clock = stopping.SaveClock(0.0)
  assert not clock.due()
  clock = stopping.SaveClock(1e-6)
  time.sleep(0.01)
  assert clock.due()
  clock.saved()
  assert not clock.due()
