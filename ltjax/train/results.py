"""The record a finished run leaves: ``results.json``, what a study aggregates.

Each stage writes ``stage_results.json`` in its workdir when it ends (the test
metrics of its final model, the post-hoc adjustment when one was chosen, the
class counts, throughput); ``train_and_evaluate`` then writes
``<workdir>/results.json`` with every stage's record and the name of the final
one. The file exists only once the whole run finished, so its presence is what
"done" means to ``ltjax.study``. Both are written by process 0, atomically
(a temporary file renamed into place): a reader never sees half a record.

  results.json = {'final': 'stage2', 'stages': {'stage1': record, 'stage2': record}}
  record = {'stage', 'step', 'test': {accuracy, balanced_accuracy, many, medium,
            few, per_class_accuracy}, 'posthoc': {method, value, metrics} or None,
            'train_counts', 'wall_seconds', 'wall_seconds_complete',
            'images_per_second', 'resumed'}

``wall_seconds`` is the stage's time over every process that trained it
(``ltjax.train.wall_time``: each up to the checkpoint the next resumed from);
``wall_seconds_complete`` is False where a resume could not tell the earlier
processes' time (their checkpoint predates the record), and ``wall_seconds``
is then the last process's alone;
``images_per_second`` is the median training throughput over the stage's log
rows, which evaluation and checkpointing do not count.
"""

import os

import jax
import numpy as np

from ltjax import files
from ltjax.eval.report import to_jsonable
from ltjax.train.writer import read_rows

FILENAME = 'results.json'
STAGE_FILENAME = 'stage_results.json'
METRICS_FILENAME = 'metrics.jsonl'
# Both records are derived: a finished run rewrites them when its command is rerun.
_FIX = (
    'Rerun the training command that made this run (the same --config and --workdir): a '
    'finished run is evaluated again and rewrites it.'
)
_OTHER_FIX = 'Restore it from a copy, or delete it and rerun the command that wrote it.'


def write_json(path: str, record: dict) -> None:
  """Writes ``record`` to ``path`` atomically (process 0 only)."""
  if jax.process_index() != 0:
    return
  files.write_json(path, to_jsonable(jax.device_get(record)), indent=1)


def median_throughput(workdir: str) -> float | None:
  """Median 'images_per_second' over the training rows of ``workdir``'s metrics.jsonl."""
  values = [
      row['images_per_second']
      for row in read_rows(files.join(workdir, METRICS_FILENAME))
      if row.get('split') == 'train' and 'images_per_second' in row
  ]
  # The first row includes compilation; drop it when there are others.
  values = values[1:] if len(values) > 1 else values
  return float(np.median(values)) if values else None


def read_json(path: str) -> dict | None:
  """The JSON object in ``path``, or None when there is no such file.

  A damaged file raises files.DamagedFileError naming it and the fix.
  """
  if not files.exists(path):
    return None
  ours = os.path.basename(path) in (FILENAME, STAGE_FILENAME)
  return files.read_json(path, fix=_FIX if ours else _OTHER_FIX)


def stage_record(
    *,
    stage: str,
    step: int,
    test: dict,
    posthoc: dict | None,
    train_counts,
    wall_seconds: float,
    wall_seconds_complete: bool,
    resumed: bool,
    workdir: str,
) -> dict:
  keys = ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few', 'per_class_accuracy')
  return {
      'stage': stage,
      'step': int(step),
      'test': {k: test[k] for k in keys if k in test},
      'posthoc': (
          None
          if posthoc is None
          else {
              'method': posthoc['method'],
              'value': posthoc['value'],
              'metrics': {k: posthoc['metrics'][k] for k in keys if k in posthoc['metrics']},
          }
      ),
      'train_counts': np.asarray(train_counts).tolist(),
      'wall_seconds': float(wall_seconds),
      'wall_seconds_complete': bool(wall_seconds_complete),
      'images_per_second': median_throughput(workdir),
      'resumed': bool(resumed),
  }


def write_run(workdir: str, stage_workdirs: dict[str, str]) -> dict | None:
  """Joins the stages' records into ``<workdir>/results.json``; returns it (process 0).

  Other processes write nothing and read nothing (the stage records are process 0's,
  which may still be writing them): they return None.
  """
  if jax.process_index() != 0:
    return None
  stages = {}
  for name, stage_workdir in stage_workdirs.items():
    stages[name] = files.read_json(files.join(stage_workdir, STAGE_FILENAME), fix=_FIX)
  record = {'final': list(stage_workdirs)[-1], 'stages': stages}
  write_json(files.join(workdir, FILENAME), record)
  return record


def read_run(workdir: str) -> dict:
  """``<workdir>/results.json`` (FileNotFoundError if the run has not finished)."""
  return files.read_json(files.join(workdir, FILENAME), fix=_FIX)


def final_metrics(record: dict, *, posthoc: bool = True) -> dict:
  """The final stage's test metrics: post-hoc adjusted ones when chosen (and asked)."""
  final = record['stages'][record['final']]
  if posthoc and final.get('posthoc'):
    return final['posthoc']['metrics']
  return final['test']
