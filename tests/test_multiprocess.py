"""A real two-process job on CPU: train, checkpoint, resume and evaluate; one writer.

Two local processes (two CPU devices each) join through ``jax.distributed``
with a local coordinator, offline, the way ``--multihost`` joins a pod's hosts:
``python -m ltjax.train --multihost`` trains 8 steps, the same command resumes
to 12, and ``python -m ltjax.eval --multihost`` evaluates the result.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO
from helpers import tiny_config
from ltjax import train
from ltjax.train import multihost

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = f"""
import sys
sys.path.insert(0, {HERE!r})
from helpers import tiny_config


def get_config():
  return tiny_config(checkpoint_every_steps=4, **{{'schedule.name': 'constant'}})
"""


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def run_job(tmp_path, mode, workdir, *command_flags):
  """Runs ``python -m ltjax.<mode> --multihost ...`` as two processes; their records."""
  env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_force_host_platform_device_count=2',
      JAX_COORDINATOR_ADDRESS=f'localhost:{free_port()}',
      LTJAX_NUM_PROCESSES='2',
  )
  cache = os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache'))
  outs = [str(tmp_path / f'{mode}{i}.json') for i in range(2)]
  workers = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.join(HERE, 'multiprocess_worker.py'),
              mode,
              workdir,
              outs[i],
              '--multihost',
              f'--compilation_cache={cache}',
              *command_flags,
          ],
          env={**env, 'LTJAX_PROCESS_ID': str(i)},
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  logs = [w.communicate(timeout=300)[0] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], '\n'.join(log[-3000:] for log in logs)
  records = [json.loads(open(out).read()) for out in outs]
  assert [r['exit_code'] for r in records] == [0, 0], '\n'.join(log[-3000:] for log in logs)
  assert [(r['process_index'], r['process_count'], r['device_count']) for r in records] == [
      (0, 2, 4),
      (1, 2, 4),
  ]
  return records


def test_two_processes_train_resume_and_evaluate_and_only_process_0_writes(tmp_path):
  workdir = str(tmp_path / 'run')
  config_file = tmp_path / 'tiny.py'
  config_file.write_text(CONFIG)
  config = f'--config={config_file}'
  jobs = [
      run_job(
          tmp_path, 'train', workdir, config, f'--workdir={workdir}', '--config.num_train_steps=8'
      ),
      run_job(
          tmp_path,
          'train',
          workdir,
          config,
          f'--workdir={workdir}',
          '--config.num_train_steps=12',
          '--resume_allow=num_train_steps',
      ),
      run_job(
          tmp_path,
          'eval',
          workdir,
          f'--workdir={workdir}',
          '--checkpoint=latest',
          '--sharpness_directions=0',
      ),
  ]
  # Process 1 writes only orbax's own per-process metadata of the arrays it holds.
  for train_job in jobs[:2]:
    written = train_job[1]['written']
    assert written and all('array_metadatas/process_1' in f for f in written), written
  assert jobs[2][1]['written'] == []
  written_by_0 = {f.removesuffix('.tmp') for job in jobs for f in job[0]['written']}
  for name in ('metrics.jsonl', 'results.json', 'config.json', 'report/report.json'):
    assert name in written_by_0 and os.path.exists(os.path.join(workdir, name)), name

  record = json.loads(open(os.path.join(workdir, 'results.json')).read())['stages']['stage1']
  report = json.loads(open(os.path.join(workdir, 'report', 'report.json')).read())
  assert record['step'] == 12
  assert record['test']['accuracy'] == report['accuracy']
  # The same 12 steps in one process (8 devices, the same global batches).
  _, reference = train.train_and_evaluate(
      tiny_config(num_train_steps=12, checkpoint_every_steps=4, **{'schedule.name': 'constant'}),
      str(tmp_path / 'one_process'),
  )
  np.testing.assert_allclose(record['test']['accuracy'], reference['accuracy'], atol=1e-6)


@pytest.mark.parametrize(
    'variable,value',
    [('SLURM_NTASKS', '4'), ('OMPI_COMM_WORLD_SIZE', '2'), ('TPU_WORKER_HOSTNAMES', 'a,b')],
)
def test_a_forgotten_multihost_flag_is_named(monkeypatch, variable, value):
  monkeypatch.setenv(variable, value)
  with pytest.raises(ValueError, match=f'(?s)multi-host job.*{variable}.*Add --multihost'):
    multihost.initialize(False)


def test_a_single_process_environment_passes(monkeypatch):
  for variable in (
      'SLURM_NTASKS',
      'OMPI_COMM_WORLD_SIZE',
      'PMI_SIZE',
      'TPU_WORKER_HOSTNAMES',
      'JAX_COORDINATOR_ADDRESS',
      'LTJAX_NUM_PROCESSES',
  ):
    monkeypatch.delenv(variable, raising=False)
  monkeypatch.setenv('SLURM_NTASKS', '1')
  multihost.initialize(False)  # No error, no distributed initialisation.
