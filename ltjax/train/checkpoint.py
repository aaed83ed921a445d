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
real safety margin.

The loop decides when to save (at evaluations, every N steps or minutes, on a
stop request) and calls ``save`` / ``save_best`` with explicit steps, rather
than orbax's own save-decision policies: the decisions need the loop's state
(an evaluation's score, a signal), and one place makes them.
"""

import json

from absl import logging
from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from ltjax import files
from ltjax.train.state import TrainState

_SAVED_FIELDS = ('step', 'params', 'batch_stats', 'opt_state', 'rng')
_SCORE = 'selection_score'
CONFIG_FILE = 'config.json'


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
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def _pytree(state: TrainState) -> dict:
  return {name: getattr(state, name) for name in _SAVED_FIELDS}


class Checkpoints:
  """Saves and restores :class:`TrainState` under ``workdir``."""

  def __init__(self, workdir: str, *, keep: int = 2):
    if keep < 1:
      raise ValueError(f'keep_checkpoints={keep} must be >= 1: resuming needs a kept checkpoint.')
    self.workdir = workdir
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
    if step is not None:
      manager = {'latest': self.latest, 'best': self.best}[self.check_step(which, step)]
      return abstract_state.replace(**manager.restore(step, args=ocp.args.StandardRestore(target)))
    if which == 'best':
      step = self.best.best_step()
      if step is None:
        return None
      return abstract_state.replace(
          **self.best.restore(step, args=ocp.args.StandardRestore(target))
      )
    # The newest readable latest checkpoint: an unreadable one is skipped, saying so.
    failures = []
    for step in sorted(self.latest.all_steps(), reverse=True):
      try:
        restored = self.latest.restore(step, args=ocp.args.StandardRestore(target))
      except Exception as e:  # pylint: disable=broad-except
        # orbax / tensorstore raise many types for a damaged file; any of them means "skip".
        failures.append(f'step {step}: {type(e).__name__}: {str(e)[:300]}')
        logging.warning(
            'Checkpoint %s/checkpoints/%d cannot be read (%s); trying an older one.',
            self.workdir,
            step,
            failures[-1],
        )
        continue
      if failures:
        print(
            f'Resuming from step {step}: the newer checkpoints of {self.workdir}/checkpoints '
            f'could not be read ({"; ".join(failures)}).'
        )
      return abstract_state.replace(**restored)
    if failures:
      raise RuntimeError(
          f'No checkpoint in {self.workdir}/checkpoints can be read: {"; ".join(failures)}. '
          'Restore the folder from a copy, or train into a new --workdir.'
      )
    return None

  def restore_variables(
      self, abstract_variables: dict, *, which: str = 'best', step: int | None = None
  ) -> dict | None:
    """Restores only {'step', 'params', 'batch_stats'}: what evaluation needs.

    ``abstract_variables``: {'params', 'batch_stats'} as shapes (e.g. from
    ``jax.eval_shape(model.init, ...)``) with a ``sharding`` on each leaf or
    not (then replicated on ``jax.devices()``). The optimiser state, whose
    structure depends on the training recipe, is not read.
    """
    manager = {'latest': self.latest, 'best': self.best}[which]
    if step is None:
      step = manager.latest_step() if which == 'latest' else manager.best_step()
      if step is None:
        return None
    else:
      manager = {'latest': self.latest, 'best': self.best}[self.check_step(which, step)]
    item = {'step': jax.ShapeDtypeStruct((), 'int32'), **abstract_variables}
    replicated = jax.sharding.NamedSharding(
        jax.sharding.Mesh(jax.devices(), ('data',)), jax.sharding.PartitionSpec()
    )
    restore_args = jax.tree.map(
        lambda x: ocp.ArrayRestoreArgs(sharding=getattr(x, 'sharding', None) or replicated), item
    )
    return manager.restore(
        step,
        args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True),
    )

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
