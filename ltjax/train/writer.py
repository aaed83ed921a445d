"""Metric output of a run: ``metrics.jsonl`` and TensorBoard event files.

Each ``write`` appends one JSON object {"step", "epoch", "split", ...} to
``<workdir>/metrics.jsonl`` and the scalar values to TensorBoard (through
tensorboardX, which needs no TensorFlow). Only process 0 writes.

Rows are unique by (split, step), so a reader never double-counts. A run
resumed from step S re-trains the steps after S, so the writer drops the rows
written after S by the interrupted run (``resume_step``; TensorBoard's
``purge_step`` does the same for the event files); a row written again for
the same (split, step) replaces the old one.
"""

import json
import math
import os

import jax
import numpy as np


def _jsonable(value):
  if isinstance(value, (np.ndarray, jax.Array)):
    value = np.asarray(value).tolist()
  if isinstance(value, (np.floating, np.integer)):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN/inf; keep them readable.
  if isinstance(value, list):
    return [_jsonable(v) for v in value]
  return value


class MetricWriter:
  """Appends rows to metrics.jsonl and TensorBoard scalars under ``workdir``."""

  def __init__(self, workdir: str, *, tensorboard: bool = True, resume_step: int | None = None):
    """``resume_step``: the step a resumed run continues from (rows after it are dropped)."""
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    self._keys = set()
    if not self.enabled:
      return
    rows = read_rows(self.path)
    if resume_step is not None and any(r['step'] > resume_step for r in rows):
      rows = [r for r in rows if r['step'] <= resume_step]
      self._rewrite(rows)
    self._keys = {(r['split'], r['step']) for r in rows}
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      purge = None if resume_step is None else resume_step + 1
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), purge_step=purge)

  def _rewrite(self, rows: list[dict]) -> None:
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(''.join(json.dumps(r) + '\n' for r in rows))
    os.replace(tmp, self.path)

  def write(self, *, step: int, epoch: float, split: str, **values) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'epoch': float(epoch), 'split': split}
    row.update({k: _jsonable(v) for k, v in values.items()})
    key = (split, int(step))
    if key in self._keys:  # Written again (a finished run re-evaluated): replace, not repeat.
      self._rewrite([r for r in read_rows(self.path) if (r['split'], r['step']) != key])
    self._keys.add(key)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if self._tb is not None:
      for key, value in values.items():
        if np.ndim(value) == 0 and isinstance(_jsonable(value), (int, float)):
          self._tb.add_scalar(f'{split}/{key}', float(value), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl ([] if it does not exist; a torn last line is dropped)."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # The last line of a killed process may be half-written.
  return rows
