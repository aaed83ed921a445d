"""Stopping a run safely: signals, pod preemptions, time-based checkpoints, exit codes.

On SIGTERM (a preemptible VM's notice, a scheduler's stop) or SIGINT (Ctrl-C)
the handler only records the request; the loop sees it after the current step,
saves a checkpoint at that step, waits until it is committed, prints how to
resume and raises ``Stopped``. A second Ctrl-C interrupts at once.

One handler serves the whole command (``handling()``: ``train_and_evaluate``
and a study install it once, nested calls share it), so a request is never
lost between the places that look at it: the step loop after every step, an
evaluation between its batches (it is abandoned and redone on resume, as the
checkpoint of its step was saved before it started), after every evaluation,
between the data loading, the stages and the study's cells (``check``). Each
raises ``Stopped`` with the place and how to resume; the commands exit 75. On a pod,
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
  69  the workdir is held by another run, which may still be alive (EX_UNAVAILABLE:
      a lease not renewed for 3 minutes is taken over, so a rerun after that
      continues; ltjax.train.workdir_lock)
  75  stopped by a signal or a preemption with the checkpoint saved (EX_TEMPFAIL:
      rerun the same command to resume)
"""

import contextlib
import signal
import threading
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_WORKDIR_BUSY = 69
EXIT_STOPPED = 75


class Stopped(Exception):
  """Stopped on request; ``step``: the step whose checkpoint was saved (None: between steps)."""

  def __init__(self, message: str, step: int | None = None):
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

  def check(self, where: str) -> None:
    """Raises ``Stopped`` naming ``where`` if a stop was requested (a signal to this process).

    For the places outside the step loop (between stages, after an evaluation,
    between study cells), where nothing is left unsaved.
    """
    if self.signal_name is not None:
      raise Stopped(
          f'Stopped {where} ({self.signal_name}): everything finished so far is saved. Rerun '
          'the same command to continue.'
      )

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


_active: StopRequests | None = None


@contextlib.contextmanager
def handling():
  """The command's one stop handler: installs it unless one is active; yields the active one."""
  global _active
  if _active is not None:
    yield _active
    return
  with StopRequests() as stops:
    _active = stops
    try:
      yield stops
    finally:
      _active = None


def check(where: str) -> None:
  """``StopRequests.check`` of the active handler (nothing without one)."""
  if _active is not None:
    _active.check(where)


class Interrupted(Stopped):
  """A stop request abandoned an evaluation or a feature extraction between two batches."""


def check_batch() -> None:
  """Between the batches of an evaluation or a feature extraction: raises ``Interrupted``.

  A single process only: on several, the batches' collectives would leave the
  others waiting, so there an evaluation runs to its end and the request is
  seen right after it.
  """
  if _active is not None and _active.signal_name is not None and jax.process_count() == 1:
    raise Interrupted(
        f'Stopped during an evaluation ({_active.signal_name}): it is redone when you rerun the '
        'same command.'
    )


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
