"""Joining the processes of a multi-host job (a TPU pod slice, a GPU cluster).

``--multihost`` calls ``jax.distributed.initialize()`` with no arguments, so the
coordinator settings come from where JAX itself looks: a cluster it detects
(Cloud TPU, SLURM, Open MPI, Kubernetes) or the environment variables it reads
(``JAX_COORDINATOR_ADDRESS``, ``JAX_COORDINATOR_PORT``, ...). On a cluster JAX
does not detect, set ``JAX_COORDINATOR_ADDRESS`` and the two values JAX reads
from no variable, ``LTJAX_NUM_PROCESSES`` and ``LTJAX_PROCESS_ID``.

Forgetting ``--multihost`` on a multi-host job is not harmless: each host would
train its own copy of the model on the same data and write the same workdir.
``check_single_process_environment`` recognises the launchers' variables and
stops with the fix instead.
"""

import os

import jax

# Launcher variables that give the number of processes of the job.
_PROCESS_COUNT_VARIABLES = (
    ('LTJAX_NUM_PROCESSES', 'ltjax'),
    ('SLURM_NTASKS', 'SLURM'),
    ('OMPI_COMM_WORLD_SIZE', 'Open MPI'),
    ('PMI_SIZE', 'MPI (PMI)'),
)


def environment_process_count() -> tuple[int, str] | None:
  """(processes, what says so) from the job's environment, or None when it says nothing."""
  for variable, launcher in _PROCESS_COUNT_VARIABLES:
    value = os.environ.get(variable, '')
    if value.isdigit():
      return int(value), f'{variable}={value} ({launcher})'
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  if ',' in hosts:
    return len(hosts.split(',')), f'TPU_WORKER_HOSTNAMES lists {len(hosts.split(","))} hosts'
  if os.environ.get('JAX_COORDINATOR_ADDRESS'):
    return 2, 'JAX_COORDINATOR_ADDRESS is set'  # At least two: a coordinator means a job.
  return None


def check_single_process_environment() -> None:
  """Raises ValueError when the environment is a multi-process job but --multihost is off."""
  found = environment_process_count()
  if found is not None and found[0] > 1:
    raise ValueError(
        f'This looks like a multi-host job ({found[1]}) but --multihost was not given: every '
        'host would train its own copy into the same workdir. Add --multihost (or, for a '
        'single process, unset that variable).'
    )


def initialize(multihost: bool) -> None:
  """``jax.distributed.initialize()`` when ``multihost``; otherwise the check above."""
  if not multihost:
    check_single_process_environment()
    return
  if jax.distributed.is_initialized():  # A second command in the same process (a notebook).
    return
  kwargs = {}
  if os.environ.get('LTJAX_NUM_PROCESSES'):
    kwargs['num_processes'] = int(os.environ['LTJAX_NUM_PROCESSES'])
  if os.environ.get('LTJAX_PROCESS_ID'):
    kwargs['process_id'] = int(os.environ['LTJAX_PROCESS_ID'])
  jax.distributed.initialize(**kwargs)
