"""Metric output of a run: ``metrics.jsonl`` and TensorBoard event files.

Each ``write`` appends one JSON object {"step", "epoch", "split", ...} to
``<workdir>/metrics.jsonl`` and the scalar values to TensorBoard (through
tensorboardX, which needs no TensorFlow). Only process 0 writes.
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

  def __init__(self, workdir: str, *, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled and tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def write(self, *, step: int, epoch: float, split: str, **values) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'epoch': float(epoch), 'split': split}
    row.update({k: _jsonable(v) for k, v in values.items()})
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
