"""Data parallelism: one 1-D ('data',) mesh, replicated state, sharded batch.

Under ``jax.jit`` with these shardings XLA inserts the gradient all-reduce, and
BatchNorm statistics are computed over the *global* batch (synchronised BN):
the mean and variance reductions span the sharded batch axis. PyTorch LTR code
with DataParallel/DDP uses per-GPU statistics instead, so multi-device numbers
can differ slightly from theirs; one device is identical.
"""

import collections
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated_like(tree, mesh: Mesh):
  """A pytree of replicated shardings with the structure of ``tree``."""
  return jax.tree.map(lambda _: replicated(mesh), tree)


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Joins every process's local batch into global arrays sharded on 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def prefetch_to_device(
    local_batches: Iterator[dict[str, np.ndarray]], mesh: Mesh, size: int = 2
) -> Iterator[dict[str, jax.Array]]:
  """Global device batches, ``size`` ahead, so host-to-device copies overlap compute."""
  queue = collections.deque()
  for local in local_batches:
    queue.append(to_global(local, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def to_host(x: jax.Array) -> np.ndarray:
  """Fetches a (possibly multi-process) global array to every host."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
