"""A real two-process job on CPU: train, checkpoint, resume and evaluate; one writer.

Two local processes (two CPU devices each) join through ``jax.distributed``
with a local coordinator, offline, the way ``--multihost`` joins a pod's hosts.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import tiny_config
from ltjax import train
from ltjax.train import multihost

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_train_resume_and_evaluate_and_only_process_0_writes(tmp_path):
  workdir = str(tmp_path / 'run')
  env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='--xla_force_host_platform_device_count=2',
      JAX_COORDINATOR_ADDRESS=f'localhost:{free_port()}',
      LTJAX_NUM_PROCESSES='2',
  )
  workers = [
      subprocess.Popen(
          [
              sys.executable,
              os.path.join(HERE, 'multiprocess_worker.py'),
              workdir,
              str(tmp_path / f'out{i}.json'),
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
  outs = [json.loads((tmp_path / f'out{i}.json').read_text()) for i in range(2)]
  assert [(o['process_index'], o['process_count'], o['device_count']) for o in outs] == [
      (0, 2, 4),
      (1, 2, 4),
  ]
  assert outs[0]['step'] == outs[1]['step'] == 12
  assert outs[0]['accuracy'] == outs[1]['accuracy'] == outs[0]['report_accuracy']
  # Process 1 writes only orbax's own per-process metadata of the arrays it holds.
  assert outs[1]['written'] and all('array_metadatas/process_1' in f for f in outs[1]['written'])
  written_by_0 = {f.removesuffix('.tmp') for f in outs[0]['written']}  # Atomic writes.
  for name in ('metrics.jsonl', 'results.json', 'config.json', 'report/report.json'):
    assert name in written_by_0 and os.path.exists(os.path.join(workdir, name)), name

  # The same 12 steps in one process (8 devices, the same global batches).
  _, reference = train.train_and_evaluate(
      tiny_config(num_train_steps=12, checkpoint_every_steps=4, **{'schedule.name': 'constant'}),
      str(tmp_path / 'one_process'),
  )
  np.testing.assert_allclose(outs[0]['accuracy'], reference['accuracy'], atol=1e-6)


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
