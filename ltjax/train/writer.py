"""Metric output of a run: ``metrics.jsonl`` and TensorBoard event files.

Each ``write`` appends one JSON object {"step", "epoch", "split", ...} to
``<workdir>/metrics.jsonl`` and the scalar values to TensorBoard (through
tensorboardX, which needs no TensorFlow). Only process 0 writes.

Rows are unique by (split, step), so a reader never double-counts. A run
resumed from step S re-trains the steps after S, so the writer drops the rows
written after S by the interrupted run (``resume_step``; TensorBoard's
``purge_step`` does the same for the event files); a row written again for
the same (split, step) replaces the old one. A last line cut short by a kill
is dropped with a warning (and the file rewritten without it); a damaged line
before it stops the run, naming the file, the line and the fix.

A workdir in a bucket (``gs://...``) has no appends: there the rows are kept
in memory and the whole file is uploaded at most every ``REMOTE_UPLOAD_SECONDS``
and at every flush (evaluation, checkpoint, exit); TensorBoard's event files
likewise (``_RemoteEventFile``), through the same path API as everything else.
"""

import io
import json
import math
import time

from absl import logging
import jax
import numpy as np

from ltjax import files

REMOTE_UPLOAD_SECONDS = 30.0


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
    """``resume_step``: the step the run starts from; rows after it are dropped.

    0 for a run from its first step: every row is an earlier attempt's (one whose
    checkpoints were lost, e.g. with its machine) and goes. None (an evaluation
    of a finished run) keeps every row.
    """
    self.enabled = jax.process_index() == 0
    self.path = files.join(workdir, 'metrics.jsonl')
    self._remote = files.is_remote(workdir)
    self._tb = None
    self._rows = []
    self._uploaded = time.monotonic()
    if not self.enabled:
      return
    self._rows, rewrite = _read_rows(self.path)
    if resume_step is not None:
      kept = [r for r in self._rows if r['step'] <= resume_step] if resume_step > 0 else []
      rewrite = rewrite or len(kept) < len(self._rows)
      self._rows = kept
    if rewrite:  # Rows dropped, or a cut-short last line the next append would join.
      self._rewrite()
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top

      if self._remote:
        _register_remote_event_files(workdir)
      purge = None if resume_step is None else resume_step + 1
      self._tb = SummaryWriter(files.join(workdir, 'tensorboard'), purge_step=purge)

  def _rewrite(self) -> None:
    files.write_text(self.path, ''.join(json.dumps(r) + '\n' for r in self._rows))
    self._uploaded = time.monotonic()

  def write(self, *, step: int, epoch: float, split: str, **values) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'epoch': float(epoch), 'split': split}
    row.update({k: _jsonable(v) for k, v in values.items()})
    key = (split, int(step))
    again = any((r['split'], r['step']) == key for r in self._rows)
    if again:  # Written again (a finished run re-evaluated): replace, not repeat.
      self._rows = [r for r in self._rows if (r['split'], r['step']) != key]
    self._rows.append(row)
    if self._remote:
      if time.monotonic() - self._uploaded > REMOTE_UPLOAD_SECONDS:
        self._rewrite()
    elif again:
      self._rewrite()
    else:
      with open(self.path, 'a') as f:
        f.write(json.dumps(row) + '\n')
    if self._tb is not None:
      for key, value in values.items():
        if np.ndim(value) == 0 and isinstance(_jsonable(value), (int, float)):
          self._tb.add_scalar(f'{split}/{key}', float(value), int(step))

  def write_hparams(self, hparams: dict) -> None:
    """Records the run's hyperparameters with its TensorBoard run (the HParams dashboard).

    ``hparams``: flattened config keys -> values (non-scalars are shown as text). The
    dashboard pairs them with the test accuracies this writer logs.
    """
    if self._tb is None:
      return
    from tensorboardX.summary import hparams as hparams_summary  # pylint: disable=g-import-not-at-top

    values = {
        key: value if isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in sorted(hparams.items())
    }
    metrics = {f'test/{k}': 0.0 for k in ('accuracy', 'balanced_accuracy', 'many', 'few')}
    writer = self._tb._get_file_writer()  # pylint: disable=protected-access
    for summary in hparams_summary(values, metrics):
      writer.add_summary(summary)

  def flush(self) -> None:
    if self.enabled and self._remote:
      self._rewrite()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self.enabled and self._remote:
      self._rewrite()
    if self._tb is not None:
      self._tb.close()


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl ([] if it does not exist; a torn last line is dropped).

  A line before the last that is not a row (bytes that are not UTF-8, not a
  JSON object) raises files.DamagedFileError naming the file, the line and the
  fix: that is damage, not an interrupted write.
  """
  return _read_rows(path)[0]


def _read_rows(path: str) -> tuple[list[dict], bool]:
  """(rows, whether the file must be rewritten: its last line was cut short)."""
  if not files.exists(path):
    return [], False
  *lines, tail = files.read_bytes(path).split(b'\n')  # tail: b'' after a final newline.
  rows, offset = [], 0
  for number, line in enumerate(lines, 1):
    if line.strip():
      rows.append(_parse_row(path, line, number, offset))
    offset += len(line) + 1
  if not tail.strip():
    return rows, bool(tail)
  # Rows are written whole with their newline, so a last line without one was cut short
  # by a kill (or a power loss's zeros): drop it, and have the writer rewrite the file,
  # or the next row would be appended to it.
  try:
    rows.append(_parse_row(path, tail, len(lines) + 1, offset))
  except files.DamagedFileError:
    logging.warning(
        '%s: dropped its last line, cut short by an interrupted write: %r', path, tail[:80]
    )
  return rows, True


def _parse_row(path: str, line: bytes, number: int, offset: int) -> dict:
  fix = (
      f'Delete line {number} (the other rows are kept; a resumed run writes the rows after its '
      'checkpoint again), or restore the file from a copy.'
  )
  try:
    text = line.decode('utf-8')
  except UnicodeDecodeError as e:
    raise files.DamagedFileError(
        f'{path} is not UTF-8 at byte {offset + e.start} (line {number}): '
        f'{line[max(e.start - 20, 0) : e.start + 20]!r}. {fix}'
    ) from e
  try:
    row = json.loads(text)
  except json.JSONDecodeError as e:
    raise files.DamagedFileError(
        f'{path} line {number} is not JSON ({e.msg} at column {e.colno}): {text[:80]!r}. {fix}'
    ) from e
  if not isinstance(row, dict):
    raise files.DamagedFileError(
        f'{path} line {number} is not a metrics row (a JSON object): {text[:80]!r}. {fix}'
    )
  return row


class _RemoteEventFile:
  """A TensorBoard event file in a bucket: buffered, uploaded whole at each flush."""

  def __init__(self, path: str):
    self.path = path
    self.buffer = io.BytesIO()

  def write(self, data: bytes) -> None:
    self.buffer.write(data)

  def flush(self) -> None:
    files.write_bytes(self.path, self.buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _RemoteEventFiles:
  """tensorboardX's writer factory for one URL scheme, through ltjax.files."""

  def open(self, path: str) -> _RemoteEventFile:
    return _RemoteEventFile(path)

  def directory_check(self, path: str) -> None:
    files.makedirs(path)


def _register_remote_event_files(workdir: str) -> None:
  """Routes tensorboardX's event files for ``workdir``'s scheme through ltjax.files.

  tensorboardX's own ``gs://`` writer needs google-cloud-storage and has no
  other scheme; this one goes wherever ltjax.files (etils.epath) goes.
  """
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top

  record_writer.register_writer_factory(workdir.split(':', 1)[0], _RemoteEventFiles())
