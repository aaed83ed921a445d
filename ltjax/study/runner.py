"""Runs a study's cells one after another on this host, resumably.

For each cell in order (``ltjax.study.cells``): a ``done`` cell is skipped; a
``partial`` one resumes from its own checkpoints (``train_and_evaluate``
resumes any workdir); a ``pending`` one starts. A cell is the run its
``command`` would make, so cells run here and cells a scheduler ran from
``--print_commands`` are the same files and aggregate the same way.

Two things only a study can do:
  * stage-1 reuse: a cell whose stage-1 config equals a finished cell's (cRT,
    LWS and LORT on one CE backbone; LORT on CC-SAM's stage 1; two post-hoc
    adjustments of one model) starts from a copy of that cell's stage-1 files
    -- the same checkpoints its own stage 1 would have written, bit for bit,
    since the configs and seeds are equal -- and only evaluates it, adjusts it
    and trains its stage 2. ``cell.json`` names the source, so the aggregated
    wall time counts stage 1 once, from it.
  * settings check: a started cell whose recorded recipe and overrides differ
    from what the study now gives it, or whose recorded ``config.json`` differs
    from the config they now make (a recipe file edited after the cell ran),
    stops the study before anything runs, naming the cell and the keys (an
    edited study or recipe would otherwise mix two settings in one row: a
    finished cell is skipped, not retrained).
  * the report: with ``study.report`` each finished cell also gets
    ``report/report.json`` (``ltjax.eval.report``: L_i, r_i, norms) of its
    final model.

A cell that fails is recorded (``<cell>/failed.txt``, the traceback) and the
study goes on; a rerun retries it. Ctrl-C or SIGTERM stops the study after the
running cell saved its checkpoint (that cell resumes next time).

Several study commands may run on one study at once (workers draining it on a
cluster, or a command started twice): a cell is written only under its
workdir's lock (``ltjax.train.workdir_lock``), and a cell another process holds
(its ``WorkdirBusyError``) is skipped as running elsewhere -- neither trained
twice nor recorded as failed. Its row is complete once that process finishes
it (rerun, or ``--aggregate_only``).
"""

import json
import os
import time
import traceback
from typing import Callable

import ml_collections

from ltjax import files
from ltjax.eval import report as eval_report
from ltjax.study import cells as study_cells
from ltjax.train import checkpoint
from ltjax.train import final_adjustment
from ltjax.train import loop
from ltjax.train import results as run_results
from ltjax.train import resume_check
from ltjax.train import stages
from ltjax.train import stopping
from ltjax.train import workdir_lock
from ltjax.train import workdir_report

CELL_FILENAME = 'cell.json'
FAILED_FILENAME = 'failed.txt'
REPORT_DIR = 'report'
# Stage 1's files in a run workdir; everything else (stage2/, results.json, the report,
# cell.json) belongs to the whole run and is not copied when stage 1 is reused.
_RUN_ONLY = {
    stages.STAGE2,
    run_results.FILENAME,
    REPORT_DIR,
    CELL_FILENAME,
    FAILED_FILENAME,
    final_adjustment.POSTHOC_FILE,
    workdir_lock.LOCK_FILE,
}


def stage1_fingerprint(config: ml_collections.ConfigDict) -> str:
  """What stage 1's checkpoints depend on: the config without stage 2, post-hoc and display keys.

  (The post-hoc adjustment is chosen after training, from the final checkpoint; a reusing run
  computes its own.)
  """
  settings = config.to_dict()
  for key in ('stage2', 'posthoc', 'progress_bar'):
    settings.pop(key, None)
  return json.dumps(settings, sort_keys=True, default=repr)


def _reusable_stage1(config, finished: dict[str, study_cells.Cell]) -> study_cells.Cell | None:
  """A finished cell with the same stage 1 whose checkpoints are here (None: train it).

  A cell finished on another machine (its records committed, its checkpoints not) has
  nothing to copy.
  """
  source = finished.get(stage1_fingerprint(config))
  if source is None or not files.exists(files.join(source.workdir, 'checkpoints')):
    return None
  return source


def _recorded_differences(cell: study_cells.Cell, *, stage1: bool) -> dict | None:
  """``resume_check.differences`` of the cell's config.json and its config now; None without one.

  Keys that only change how a run is watched (``resume_check.WATCH_KEYS``) may differ;
  ``stage1`` leaves out the stage-2 and post-hoc keys.
  """
  path = files.join(cell.workdir, checkpoint.CONFIG_FILE)
  if not files.exists(path):
    return None
  recorded = checkpoint.read_config_json(path)  # Names a damaged file and the fix.
  return resume_check.differences(recorded, cell.config(), stage1=stage1)


def _config_changes(cell: study_cells.Cell) -> list[str]:
  """'key: recorded -> now' for each key the cell's config.json has otherwise than its config now.

  A finished cell is compared whole; a partial one without its stage-2 and post-hoc keys,
  which its stage 2 records (and its resume checks) when it gets there.
  """
  stage1 = cell.state() != study_cells.DONE
  changes = _recorded_differences(cell, stage1=stage1) or {}
  return [f'{key}: {old!r} -> {new!r}' for key, (old, new) in changes.items()]


def check_recorded_settings(all_cells: list[study_cells.Cell]) -> None:
  """Fails if a started cell was made with other settings than the study now gives it.

  A study edited after some cells ran would otherwise aggregate two recipes under one row;
  so would a recipe file edited after them (the study's recipe and overrides unchanged),
  which the cell's ``config.json`` shows.
  """
  changed = []
  for cell in all_cells:
    recorded = read_cell_record(cell)
    if not recorded:
      continue
    now = json.loads(json.dumps({'recipe': cell.recipe, 'overrides': cell.overrides}))
    before = {'recipe': recorded.get('recipe'), 'overrides': recorded.get('overrides')}
    if now != before:
      keys = sorted(
          k
          for k in set(now['overrides']) | set(before['overrides'] or {})
          if now['overrides'].get(k) != (before['overrides'] or {}).get(k)
      )
      if now['recipe'] != before['recipe']:
        keys.insert(0, 'recipe')
      else:
        # An override that restates what the cell ran (a study pinning a value its recipe has
        # since changed, to keep its finished cells) changes no run: config.json decides.
        whole = _recorded_differences(cell, stage1=False)
        keys = keys if whole is None else [k for k in keys if k in whole]
      if keys:
        changed.append(f'  {cell.workdir}: {", ".join(keys)}')
        continue
    config_changes = _config_changes(cell)
    if config_changes:
      changed.append(
          f'  {cell.workdir} (its config.json, recorded -> now): ' + '; '.join(config_changes)
      )
  if changed:
    raise ValueError(
        'These cells were run with other settings than the study now gives them (the '
        'differing keys are listed); delete those folders to rerun them with the new settings, '
        'or restore the study file or recipe:\n' + '\n'.join(changed)
    )


def read_cell_record(cell: study_cells.Cell) -> dict:
  """``<cell>/cell.json`` ({} before the runner first wrote it)."""
  return run_results.read_json(files.join(cell.workdir, CELL_FILENAME)) or {}


def _copy_stage1(source: study_cells.Cell, workdir: str) -> None:
  files.makedirs(workdir)
  for name in files.listdir(source.workdir):
    if name in _RUN_ONLY:
      continue
    src, dst = files.join(source.workdir, name), files.join(workdir, name)
    if files.isdir(src):
      files.copytree(src, dst)
    else:
      files.write_bytes(dst, files.read_bytes(src))


def write_report(cell: study_cells.Cell) -> str:
  """``<cell>/report/report.json`` of the cell's final model; returns its path."""
  record = run_results.read_run(cell.workdir)
  final_workdir = cell.workdir
  if record['final'] != stages.STAGE1:
    final_workdir = files.join(cell.workdir, record['final'])
  report = workdir_report.report_for_workdir(final_workdir, sharpness_directions=0)
  outdir = files.join(cell.workdir, REPORT_DIR)
  files.makedirs(outdir)
  path = files.join(outdir, 'report.json')
  keep = {k: v for k, v in report.items() if k not in eval_report.MATRIX_KEYS}
  run_results.write_json(path, keep)
  return path


def run_cell(
    cell: study_cells.Cell, finished: dict, *, report: bool, log: Callable, name: str = ''
) -> bool:
  """Trains (or resumes) one cell; writes cell.json first and the report last.

  Every write holds the cell's lock: first for cell.json and a reused stage 1, then the run's
  own (``loop.train_and_evaluate``), then for the report. A cell another process holds raises
  WorkdirBusyError before anything is written. Returns False when the cell turned out finished
  (by another process) once locked.
  """
  name = name or f'{cell.method} seed {cell.seed}'
  config = cell.config()
  with workdir_lock.workdir_lock(cell.workdir):
    state = cell.state()  # Again, locked: another process may have run it since it was read.
    if state == study_cells.DONE:
      return False
    log(f'{name}: {"resuming" if state == study_cells.PARTIAL else "starting"} in {cell.workdir}')
    source = None
    if state == study_cells.PENDING:
      source = _reusable_stage1(config, finished)
      if source is not None:
        log(f'  stage 1 reused from {source.method}/seed{source.seed} (identical stage-1 config)')
        _copy_stage1(source, cell.workdir)
    record_path = files.join(cell.workdir, CELL_FILENAME)
    cell_record = read_cell_record(cell)
    cell_record.update(
        method=cell.method,
        seed=cell.seed,
        recipe=cell.recipe,
        overrides=cell.overrides,
        command=cell.command(),
    )
    if source is not None:
      cell_record['stage1_from'] = os.path.relpath(source.workdir, os.path.dirname(cell.workdir))
    run_results.write_json(record_path, cell_record)
  # Another process taking the cell in between is refused here or goes on from these files.
  loop.train_and_evaluate(config, cell.workdir)
  with workdir_lock.workdir_lock(cell.workdir):
    if report:
      write_report(cell)
    files.remove(files.join(cell.workdir, FAILED_FILENAME))
  return True


def _record_failure(cell: study_cells.Cell, text: str) -> bool:
  """Writes ``<cell>/failed.txt`` unless another process holds the cell now (then False)."""
  try:
    with workdir_lock.workdir_lock(cell.workdir):
      files.write_text(files.join(cell.workdir, FAILED_FILENAME), text)
  except workdir_lock.WorkdirBusyError:
    return False  # Its workdir is that process's now.
  return True


def _write_missing_report(cell: study_cells.Cell) -> None:
  with workdir_lock.workdir_lock(cell.workdir):
    if not files.exists(files.join(cell.workdir, REPORT_DIR, 'report.json')):
      write_report(cell)


def run(
    study: ml_collections.ConfigDict, workdir: str, *, log: Callable[[str], None] = print
) -> list[study_cells.Cell]:
  """Runs every unfinished cell; returns the cells that failed."""
  all_cells = study_cells.cells(study, workdir)
  check_recorded_settings(all_cells)
  report = bool(study.get('report', False))
  finished = {}  # stage-1 fingerprint -> a finished cell with that stage 1.

  def remember(cell):
    finished.setdefault(stage1_fingerprint(cell.config()), cell)

  failed, elsewhere = [], []
  for i, cell in enumerate(all_cells):
    name = f'[{i + 1}/{len(all_cells)}] {cell.method} seed {cell.seed}'
    stopping.check(f'before the cell {cell.method} seed {cell.seed}')  # The command's handler.
    if cell.state() == study_cells.DONE:
      if report and not files.exists(files.join(cell.workdir, REPORT_DIR, 'report.json')):
        try:
          _write_missing_report(cell)
        except workdir_lock.WorkdirBusyError as e:
          log(f'{name}: its report is being written elsewhere ({e.holder})')
      log(f'{name}: done, skipped')
      remember(cell)
      continue
    start = time.perf_counter()
    try:
      ran = run_cell(cell, finished, report=report, log=log, name=name)
    except (KeyboardInterrupt, stopping.Stopped):
      raise  # A stop request ends the study; the cell resumes next time.
    except workdir_lock.WorkdirBusyError as e:
      # Another study command (or a scheduler's job) runs this cell: not a failure of it.
      log(f'{name}: running elsewhere ({e.holder}); skipped')
      elsewhere.append(cell)
      continue
    except Exception:  # pylint: disable=broad-except
      # One broken cell must not cost the others; the traceback is kept with the cell.
      where = (
          f'traceback in {cell.workdir}/{FAILED_FILENAME}'
          if _record_failure(cell, traceback.format_exc())
          else 'another process holds it now'
      )
      log(f'{name}: FAILED ({where}); going on')
      failed.append(cell)
      continue
    if ran:
      log(f'{name}: done in {time.perf_counter() - start:.0f} s')
    else:
      log(f'{name}: finished elsewhere, skipped')
    remember(cell)
  if elsewhere:
    log(
        f'{len(elsewhere)} cells were running elsewhere and were skipped ('
        + ', '.join(f'{c.method}/seed{c.seed}' for c in elsewhere)
        + '): the table counts them once they finish (rerun this command, or --aggregate_only).'
    )
  return failed
