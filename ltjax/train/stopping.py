"""Stopping a run safely: signals, pod preemptions, time-based checkpoints, exit codes.

On SIGTERM (a preemptible VM's notice, a scheduler's stop) or SIGINT (Ctrl-C)
the handler only records the request; the loop sees it after the current step,
saves a checkpoint at that step, waits until it is committed, prints how to
resume and raises ``Stopped``. A second Ctrl-C interrupts at once. On a pod,
JAX's preemption service (started by ``jax.distributed.initialize``) catches
the platform's notice itself and tells every process at the same step through
``reached_preemption_sync_point``; the loop asks it every step, so all hosts
save the same step together. A signal that reaches only some processes is
shared with the others at the next log step (``any_process``).

``checkpoint_every_minutes`` bounds what an unannounced kill costs: the loop
saves when that much time passed since the last save (decided at log steps,
agreed across processes).

Exit codes of ``launch/train.py``, so a scheduler retries only what a retry
can fix:

  0   finished
  1   an unexpected error (a bug: report it)
  2   bad input: config, data, workdir (fix it, then rerun; a retry fails again)
  3   diverged: non-finite loss (lower the learning rate or fix the data; the
      last good checkpoint is kept)
  75  stopped by a signal or a preemption with the checkpoint saved (EX_TEMPFAIL:
      rerun the same command to resume)
"""

import signal
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_STOPPED = 75


class Stopped(Exception):
  """Training stopped on request after saving a checkpoint at ``step``."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


class StopRequests:
  """Context manager: SIGTERM / SIGINT handlers that record a stop request.

  Handlers are installed only in the main thread (Python delivers signals
  there); elsewhere nothing is installed and only preemptions are seen. With
  several processes SIGTERM is left to JAX's preemption service, which turns
  it into the sync point every process sees at the same step.
  """

  def __init__(self):
    self.signal_name: str | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signal_name is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt  # A second Ctrl-C: stop now.
    self.signal_name = signal.Signals(signum).name

  def __enter__(self) -> 'StopRequests':
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGTERM, signal.SIGINT)
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def requested(self, step: int, *, sync: bool) -> str | None:
    """Why to stop after ``step`` (a signal name or 'preemption'), or None.

    ``sync``: also share a signal seen by some processes only (a collective:
    every process must call this at the same steps with ``sync=True``).
    """
    if jax.process_count() > 1:
      if _reached_preemption_sync_point(step):
        return 'preemption'
      if sync and any_process(self.signal_name is not None):
        return self.signal_name or 'a signal to another process'
      return None
    return self.signal_name


def _reached_preemption_sync_point(step: int) -> bool:
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # The preemption service is off (jax_enable_preemption_service).
    return False


def any_process(flag: bool) -> bool:
  """Whether ``flag`` is true on any process (a collective on more than one)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))


class SaveClock:
  """Time-based checkpoints: due when ``minutes`` passed since the last save (0: never)."""

  def __init__(self, minutes: float):
    self.seconds = 60.0 * minutes
    self.last = time.monotonic()

  def due(self) -> bool:
    """Agreed across processes (a collective: call it at the same steps everywhere)."""
    if self.seconds <= 0:
      return False
    return any_process(time.monotonic() - self.last >= self.seconds)

  def saved(self) -> None:
    self.last = time.monotonic()
