"""Checkpoints with orbax: the last N states for resuming, and the best one.

Two ``orbax.checkpoint.CheckpointManager``s under the workdir:

  checkpoints/<step>  the latest ``keep`` states (resume from the newest)
  best/<step>         the state with the highest selection score so far (the loop
                      passes validation balanced accuracy, or test balanced
                      accuracy when there is no validation split)

orbax writes each checkpoint to a temporary directory and renames it when it
is complete, and deletes old ones only after a newer one is finished, so a
crash (or a NaN stop) never destroys a finished checkpoint. A latest
checkpoint that cannot be read (a disk fault, a truncated copy) is skipped
with a warning and the newest readable one restored, so ``keep >= 2`` is a
real safety margin. The unreadable one is then moved to
``<workdir>/damaged/<step>-<time>`` (kept for inspection, never deleted), so
the retrained step is saved again in its place. Evaluating an unreadable
checkpoint fails with ``DamagedCheckpointError`` naming it and the fix.

The loop decides when to save (at evaluations, every N steps or minutes, on a
stop request) and calls ``save`` / ``save_best`` with explicit steps, rather
than orbax's own save-decision policies: the decisions need the loop's state
(an evaluation's score, a signal), and one place makes them.

In a bucket (``gs://``) orbax writes the arrays through TensorStore, which
finds its endpoint in ``TENSORSTORE_GCS_HTTP_URL`` (not the
``STORAGE_EMULATOR_HOST`` that gcsfs and google-cloud-storage read) and
retries one that does not answer for many minutes. ``check_store`` therefore
writes, reads back and deletes a small object through both before the first
checkpoint, within ``STORE_PROBE_SECONDS``, and fails naming the endpoints.
"""

import itertools
import os
import re
import threading
import time
import uuid

from absl import logging
from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorstore as ts

try:  # How orbax builds a gs:// path's TensorStore spec (its backend variable included).
  from orbax.checkpoint._src.path import gcs_utils  # pylint: disable=g-import-not-at-top
except ImportError:  # Another orbax layout: the spec orbax has always built (_probe_spec).
  gcs_utils = None

from ltjax import files
from ltjax.train.state import TrainState

_SAVED_FIELDS = ('step', 'params', 'batch_stats', 'opt_state', 'rng')
_SCORE = 'selection_score'
CONFIG_FILE = 'config.json'
DAMAGED_DIR = 'damaged'
_MOVES = itertools.count()  # Numbers the barriers of _move_aside.


class DamagedCheckpointError(ValueError):
  """A checkpoint that is there but cannot be read: a retry fails again (exit code 2)."""


def _describe(error: Exception) -> str:
  # TensorStore's messages end in kilobytes of spec JSON; the head says what is wrong.
  return f'{type(error).__name__}: {str(error)[:300]}'


STORE_PROBE_SECONDS = 30.0  # One small write, read and delete; LTJAX_STORE_PROBE_SECONDS.
_GCS_URL = 'https://storage.googleapis.com'  # TensorStore's endpoint when no variable is set.
_CHECKED_STORES = set()  # Workdirs whose store this process has checked.
_STORE_FIX = (
    'For an emulator, set both STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage) and '
    'TENSORSTORE_GCS_HTTP_URL (TensorStore, which writes the checkpoint arrays) to its URL, '
    'and GOOGLE_AUTH_TOKEN_FOR_TESTING to any value; for a real bucket, set neither and give '
    'Application Default Credentials (README.md, "Workdirs and data in a bucket").'
)


class StoreError(ValueError):
  """A gs:// workdir's store cannot be reached the way orbax writes (exit code 2)."""


def _store_variables() -> str:
  names = ('STORAGE_EMULATOR_HOST', 'TENSORSTORE_GCS_HTTP_URL')
  return ', '.join(f'{n}={os.environ[n]}' if os.environ.get(n) else f'{n} unset' for n in names)


def _probe_spec(workdir: str) -> dict:
  build = getattr(gcs_utils, 'get_kvstore_for_gcs', None)  # orbax >= 0.12
  if build is not None:
    return build(workdir.rstrip('/') + '/')
  bucket, _, path = workdir.removeprefix('gs://').partition('/')
  return {'driver': 'gcs', 'bucket': bucket, 'path': path.rstrip('/') + '/'}


def check_store(workdir: str) -> None:
  """Checks, once per process and gs:// workdir, that checkpoints can be written there.

  A small object is written through TensorStore as orbax configures it, read
  back through ltjax.files (gcsfs: how checkpoint metadata and every other
  file travel, so both must reach the same bucket) and deleted, within
  ``STORE_PROBE_SECONDS``; otherwise StoreError names the workdir, the
  endpoint variables and what to set. Other paths are not checked.
  """
  if not workdir.startswith('gs://') or workdir in _CHECKED_STORES:
    return
  emulator = os.environ.get('STORAGE_EMULATOR_HOST')
  if emulator and not os.environ.get('TENSORSTORE_GCS_HTTP_URL'):
    url = emulator if '://' in emulator else f'http://{emulator}'
    raise StoreError(
        f'STORAGE_EMULATOR_HOST={emulator} is set but TENSORSTORE_GCS_HTTP_URL is not set: the '
        f'files of {workdir} would go to the emulator and the checkpoint arrays (TensorStore) '
        f'to {_GCS_URL}. Set TENSORSTORE_GCS_HTTP_URL={url}. {_STORE_FIX}'
    )
  seconds = float(os.environ.get('LTJAX_STORE_PROBE_SECONDS', STORE_PROBE_SECONDS))
  deadline = time.monotonic() + seconds
  key = f'.ltjax-store-probe-{uuid.uuid4().hex}'
  failure = []

  def probe():
    try:
      # Few retries: a refused connection fails in seconds, in TensorStore's own words.
      context = ts.Context(
          {'gcs_request_retries': {'max_retries': 3, 'initial_delay': '0.5s', 'max_delay': '4s'}}
      )
      left = lambda: max(deadline - time.monotonic(), 0.1)
      store = ts.KvStore.open(_probe_spec(workdir), context=context).result(timeout=left())
      try:
        store.write(key, key.encode()).result(timeout=left())
      except ValueError as e:
        if 'PERMISSION_DENIED' not in str(e):
          raise
        # A read-only bucket (evaluating someone else's run): reachable is all that counts.
        store.read(key).result(timeout=left())
        return
      try:
        files.refresh(files.join(workdir, key))  # gcsfs may hold a listing from before.
        back = files.read_bytes(files.join(workdir, key))
      except FileNotFoundError as e:
        raise FileNotFoundError(
            'written through TensorStore but not found through gcsfs: the two reach different '
            'stores'
        ) from e
      finally:
        store.write(key, None).result(timeout=left())
      if back != key.encode():
        raise ValueError('read back other bytes than TensorStore wrote: two different stores')
    except Exception as e:  # pylint: disable=broad-except
      failure.append(e)

  # A thread, so that a client stuck in its own retries cannot hold the run past the deadline.
  thread = threading.Thread(target=probe, name='ltjax-store-probe', daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive() or (failure and isinstance(failure[0], TimeoutError)):
    problem = f'the store did not answer within {seconds:.0f} s'
  elif failure:
    problem = _describe(failure[0])
  else:
    _CHECKED_STORES.add(workdir)
    return
  raise StoreError(
      f'Checkpoints cannot be written to {workdir}: {problem} ({_store_variables()}; TensorStore '
      f'writes the checkpoint arrays to TENSORSTORE_GCS_HTTP_URL, or {_GCS_URL} when it is '
      f'unset). {_STORE_FIX} LTJAX_STORE_PROBE_SECONDS sets the wait.'
  )


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the config a stage trains with to ``<workdir>/config.json``."""
  (epath.Path(workdir) / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config saved by ``save_config`` (tuples come back as lists)."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(
        f'{path} does not exist: {workdir} is not a workdir written by '
        'launch/train.py (a two-stage run keeps stage 2 in <workdir>/stage2).'
    )
  return ml_collections.ConfigDict(read_config_json(os.fspath(path)))


def read_config_json(path: str) -> dict:
  """A stage's recorded ``config.json`` as a dict; a damaged one fails naming it and the fix."""
  folder = os.path.dirname(path)
  earlier = sorted(
      (n for n in files.listdir(folder) if re.fullmatch(r'config\.\d+\.json', n)),
      key=lambda n: int(n.split('.')[1]),
  )
  fix = (
      'Restore it from a copy; or delete it and rerun the training command that made this run '
      '(the same --config and --workdir): the run writes it again before resuming, unchecked '
      'against the damaged record.'
  )
  if earlier:
    fix += (
        ' The configs this run had before its --resume_allow changes are kept as '
        + ', '.join(files.join(folder, n) for n in earlier)
        + '.'
    )
  return files.read_json(path, fix=fix)


def _pytree(state: TrainState) -> dict:
  return {name: getattr(state, name) for name in _SAVED_FIELDS}


class Checkpoints:
  """Saves and restores :class:`TrainState` under ``workdir``."""

  def __init__(self, workdir: str, *, keep: int = 2):
    if keep < 1:
      raise ValueError(f'keep_checkpoints={keep} must be >= 1: resuming needs a kept checkpoint.')
    self.workdir = workdir
    check_store(workdir)  # Before orbax: a save it cannot deliver would wait for minutes.
    self.latest = ocp.CheckpointManager(
        files.join(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
    )
    self.best = ocp.CheckpointManager(
        files.join(workdir, 'best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_mode='max', best_fn=lambda metrics: metrics[_SCORE]
        ),
    )

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, state: TrainState, *, selection_score: float | None = None) -> None:
    """Saves ``state`` as the latest, and as the best if ``selection_score`` is the highest."""
    step = int(jax.device_get(state.step))
    if self.latest.latest_step() != step:
      self.latest.save(step, args=ocp.args.StandardSave(_pytree(state)))
    if selection_score is not None:
      self.save_best(state, selection_score)

  def save_best(self, state: TrainState, selection_score: float) -> None:
    """Offers ``state`` to best/ with its score (kept if it is the highest so far)."""
    step = int(jax.device_get(state.step))
    if self.best.latest_step() != step:
      self.best.save(
          step, args=ocp.args.StandardSave(_pytree(state)), metrics={_SCORE: float(selection_score)}
      )

  def steps(self) -> dict[str, list[int]]:
    """{'latest': [...], 'best': [...]}: the steps on disk, ascending."""
    return {'latest': sorted(self.latest.all_steps()), 'best': sorted(self.best.all_steps())}

  def check_step(self, which: str, step: int) -> str:
    """The manager ('latest' or 'best') that holds ``step``, or FileNotFoundError naming them."""
    steps = self.steps()
    if step in steps[which]:
      return which
    other = 'best' if which == 'latest' else 'latest'
    if step in steps[other]:
      return other
    raise FileNotFoundError(
        f'No checkpoint at step {step} in {self.workdir}: checkpoints/ holds steps '
        f"{steps['latest'] or 'none'} and best/ {steps['best'] or 'none'}. Use one of those "
        "steps, or 'latest' or 'best'."
    )

  def restore(
      self, abstract_state: TrainState, *, which: str = 'latest', step: int | None = None
  ) -> TrainState | None:
    """Restores into the structure and shardings of ``abstract_state``.

    Args:
      abstract_state: a state (or its ``jax.eval_shape``) giving tree structure,
        shapes, dtypes and shardings.
      which: 'latest' or 'best'.
      step: a specific step; default the newest (latest) or best (best).

    Returns:
      The restored state, or None when there is no checkpoint.
    """
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, _pytree(abstract_state))
    if step is not None or which == 'best':
      if step is None:
        step = self.best.best_step()
        if step is None:
          return None
      else:
        which = self.check_step(which, step)
      return abstract_state.replace(**self._restore(which, step, ocp.args.StandardRestore(target)))
    # The newest readable latest checkpoint: an unreadable one is skipped, saying so.
    failures = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except
        # orbax / tensorstore raise many types for a damaged file; any of them means "skip".
        failures.append((step, _describe(e)))
        logging.warning(
            'Checkpoint %s cannot be read (%s); trying an older one.',
            self.step_path('latest', step),
            failures[-1][1],
        )
        continue
      if failures:
        # An older step of the same structure was read from the same store, so the newer
        # ones are damaged (not a code or connection problem): move them aside, or they
        # would stay "latest", their steps would never be saved again and every resume
        # would redo the same training.
        moved = self._move_aside('latest', [s for s, _ in failures])
        print(
            f'Resuming from step {step}: the newer checkpoints of {self.workdir}/checkpoints '
            f'could not be read ({"; ".join(f"step {s}: {e}" for s, e in failures)}); '
            + ', '.join(f'{self.step_path("latest", s)} moved to {m}' for s, m in moved)
            + ', their steps are trained and saved again.',
            flush=True,
        )
      return abstract_state.replace(**restored)
    if failures:
      raise DamagedCheckpointError(
          f'No checkpoint in {self.workdir}/checkpoints can be read: '
          f'{"; ".join(f"step {s}: {e}" for s, e in failures)}. Restore the folder from a copy; '
          f'or, to train this run from step 0, move checkpoints/ aside (e.g. into '
          f'{files.join(self.workdir, DAMAGED_DIR)}); or train into a new --workdir.'
      )
    return None

  def step_path(self, which: str, step: int) -> str:
    """The folder of ``step`` in checkpoints/ ('latest') or best/ ('best')."""
    return files.join(self.workdir, 'checkpoints' if which == 'latest' else 'best', str(step))

  def _move_aside(self, which: str, steps: list[int]) -> list[tuple[int, str]]:
    """Moves unreadable checkpoints to <workdir>/damaged/<step>-<time>; [(step, new path)]."""
    stamp = time.strftime('%Y%m%d-%H%M%S')
    moved = []
    for step in steps:
      target = files.join(self.workdir, DAMAGED_DIR, f'{step}-{stamp}')
      if jax.process_index() == 0:  # One process moves; the others wait for it below.
        n = 1
        while files.exists(target):  # Damaged again within the second: never overwrite.
          target = files.join(self.workdir, DAMAGED_DIR, f'{step}-{stamp}-{n}')
          n += 1
        files.move(self.step_path(which, step), target)
        logging.warning('Moved the unreadable checkpoint of step %d to %s.', step, target)
      moved.append((step, target))
    # A barrier name every process computes alike (not the clock's second).
    ocp.multihost.sync_global_processes(f'ltjax_moved_aside_{which}_{next(_MOVES)}')
    (self.latest if which == 'latest' else self.best).reload()  # Forget the moved steps.
    return moved

  def restore_variables(
      self, abstract_variables: dict, *, which: str = 'best', step: int | None = None
  ) -> dict | None:
    """Restores only {'step', 'params', 'batch_stats'}: what evaluation needs.

    ``abstract_variables``: {'params', 'batch_stats'} as shapes (e.g. from
    ``jax.eval_shape(model.init, ...)``) with a ``sharding`` on each leaf or
    not (then replicated on ``jax.devices()``). The optimiser state, whose
    structure depends on the training recipe, is not read.
    """
    if step is None:
      step = self.latest.latest_step() if which == 'latest' else self.best.best_step()
      if step is None:
        return None
    else:
      which = self.check_step(which, step)
    item = {'step': jax.ShapeDtypeStruct((), 'int32'), **abstract_variables}
    replicated = jax.sharding.NamedSharding(
        jax.sharding.Mesh(jax.devices(), ('data',)), jax.sharding.PartitionSpec()
    )
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, 'sharding', None) or replicated), item
    )
    return self._restore(
        which,
        step,
        ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
    )

  def _restore(self, which: str, step: int, args):
    """One checkpoint, or DamagedCheckpointError naming it and what to do instead."""
    try:
      return (self.latest if which == 'latest' else self.best).restore(step, args=args)
    except Exception as e:  # pylint: disable=broad-except
      # A raw TensorStore error names an internal file; say which checkpoint, and the fix.
      steps = self.steps()
      others = [s for s in steps['latest'] if s != step]
      if which == 'latest':
        fix = 'restore checkpoints/ from a copy'
        if others:  # Training resumes from an older one and saves this step again.
          fix = (
              'rerun the training command (python -m ltjax.train with the same --config and '
              '--workdir): it moves the unreadable checkpoint into '
              f'{files.join(self.workdir, DAMAGED_DIR)} and trains its step again'
          )
        alternatives = [f'--checkpoint={s}' for s in others] + ['--checkpoint=best']
      else:
        fix = 'restore best/ from a copy'
        alternatives = ['--checkpoint=latest'] + [f'--checkpoint={s}' for s in others]
      raise DamagedCheckpointError(
          f'Checkpoint {self.step_path(which, step)} cannot be read ({_describe(e)}). If it is '
          f'damaged (a disk fault, an interrupted copy), evaluate another one '
          f'({" or ".join(alternatives)}), or {fix}.'
      ) from e

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
