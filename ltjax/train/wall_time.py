"""A stage's wall time over every process that trained it.

A stage stopped by SIGTERM, a preemption or a session's end is finished by
another process that resumes from its last checkpoint, so the time of the
process that finishes it is only the last part. Each process therefore records,
whenever it saves a checkpoint, the stage's seconds so far under that step in
``<workdir>/wall_time.json`` ({step: seconds}); a process resuming from the
checkpoint of step S starts counting from the seconds recorded at S. The
stage's wall time is then every process's time from its start to the
checkpoint the next one resumed from, plus the last process's whole time: work
a kill lost after the last checkpoint is not counted, its redoing is (once),
and so is each restart's start-up. A checkpoint saved before the file existed
has no entry: such a resume counts from zero, and says so (``complete``).
"""

import time

import jax

from ltjax import files


class StageWallTime:
  """The stage's seconds so far, carried across resumes through ``wall_time.json``."""

  FILENAME = 'wall_time.json'

  def __init__(self, workdir: str, start_step: int, *, started: float):
    """``started``: ``time.perf_counter()`` when this process began the stage."""
    self.path = files.join(workdir, self.FILENAME)
    self.started = started
    recorded = {}
    if start_step > 0 and files.exists(self.path):
      fix = 'Delete it: the stage then counts its time from this process on.'
      recorded = {int(step): float(s) for step, s in files.read_json(self.path, fix=fix).items()}
    # Entries after the resumed step belong to checkpoints this process will save again.
    self.by_step = {step: s for step, s in recorded.items() if step <= start_step}
    self.before = 0.0 if start_step == 0 else self.by_step.get(start_step)
    self.complete = self.before is not None
    if start_step == 0:  # A fresh stage: an earlier attempt's entries are not this one's.
      self._write()

  def seconds(self) -> float:
    """The stage's wall time so far (this process's alone where ``complete`` is False)."""
    return (self.before or 0.0) + time.perf_counter() - self.started

  def saved(self, step: int) -> None:
    """Records the seconds at a checkpoint of ``step`` (call once it is saved)."""
    self.by_step[int(step)] = self.seconds()
    self._write()

  def _write(self) -> None:
    if jax.process_index() == 0:
      files.write_json(self.path, {str(k): v for k, v in sorted(self.by_step.items())})
