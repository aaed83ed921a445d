"""Resume means the same run: a workdir's config against the one asked to continue it.

A stage's ``config.json`` records what it trained with. Rerunning a command on
a workdir resumes it, so the new config is compared with that record before
anything is written. Keys that change how a run is watched or where its data
are read (``WATCH_KEYS``) may differ; any other difference -- another model,
batch size, seed, loss -- would mix two recipes in one run, so it stops with
the list of differing keys and two ways forward: a new workdir, or naming the
keys in ``allow`` for a deliberate change (more epochs, a longer stage 2).
After an allowed change the earlier config is kept as ``config.<n>.json``
(n = 1, 2, ...), never overwritten.

Stage 1's comparison leaves out ``stage2.*`` and ``posthoc.*``: stage 2 and
the post-hoc adjustment come after stage 1's training, and stage 2's own
workdir records (and checks) its config.

A key the record lacks because ltjax added it after the run started is no
difference while it holds its default (``ltjax.configs.base``): a new key's
default keeps what the code did before it existed, so the run trained that
way. Set to anything else, it is a difference like any other.
"""

import json
import os

from etils import epath
import jax
import ml_collections
import orbax.checkpoint as ocp

from ltjax.configs import base
from ltjax.train import checkpoint
from ltjax.train import config_check

# Keys that change how a run is watched, not what it trains.
WATCH_KEYS = (
    'progress_bar',
    'profile_steps',
    'log_every_steps',
    'eval_batch_size',
    'eval_every_epochs',
    'checkpoint_every_steps',
    'checkpoint_every_minutes',
    'keep_checkpoints',
    'data.num_workers',
    'data.data_dir',  # The same data, moved.
    'data.list_dir',
    'data.open_dir',
    'data.verify_eval_images',
    'eval.flip_tta',
)
_AFTER_STAGE1 = ('stage2.', 'posthoc.')


def _normalised(config: ml_collections.ConfigDict) -> dict:
  # Through JSON, as config.json holds it (tuples become lists).
  return config_check.flatten(json.loads(config.to_json_best_effort()))


def differences(
    recorded: ml_collections.ConfigDict | dict,
    config: ml_collections.ConfigDict,
    *,
    stage1: bool,
) -> dict[str, tuple]:
  """{key: (recorded value, new value)} of the keys that change what the stage trains."""
  before = json.loads(json.dumps(config_check.flatten(recorded)))  # Tuples as lists.
  now = _normalised(config)
  defaults = _normalised(base.get_config())
  missing = object()
  out = {}
  for key in sorted(set(before) | set(now)):
    if key in WATCH_KEYS or (stage1 and key.startswith(_AFTER_STAGE1)):
      continue
    old, new = before.get(key, missing), now.get(key, missing)
    if old is missing and key in defaults and new == defaults[key]:
      continue  # Added to ltjax since the record; its default is what the run did.
    if old != new:
      out[key] = (
          '(absent)' if old is missing else old,
          '(absent)' if new is missing else new,
      )
  return out


def check_resume(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    stage1: bool,
    allow: tuple[str, ...] = (),
) -> dict[str, tuple]:
  """Raises ValueError if ``workdir`` holds a run of another config; returns allowed changes.

  Args:
    config: the stage's config, as it would train now.
    workdir: the stage's workdir (nothing is written here).
    stage1: whether this is stage 1 (then stage-2 and post-hoc keys are left out).
    allow: keys (or prefixes ending in '.') that may change deliberately.
  """
  path = epath.Path(workdir) / checkpoint.CONFIG_FILE
  if not path.exists():
    return {}
  recorded = checkpoint.read_config_json(os.fspath(path))  # Names a damaged file and the fix.
  changed = differences(recorded, config, stage1=stage1)
  allowed = lambda key: any(key == a or (a.endswith('.') and key.startswith(a)) for a in allow)
  refused = {k: v for k, v in changed.items() if not allowed(k)}
  if refused:
    lines = '\n'.join(f'  {k}: {old!r} -> {new!r}' for k, (old, new) in refused.items())
    raise ValueError(
        f'{workdir} holds a run with another config ({path}); resuming it with this one would '
        f'mix two runs. Differing keys (recorded -> now):\n{lines}\n'
        'Use a new --workdir for a new run, or, for a deliberate change to this run (e.g. more '
        f'epochs), allow those keys: --resume_allow={",".join(refused)} '
        '(train_and_evaluate(..., resume_allow=...)). Nothing in the workdir was changed.'
    )
  return changed


def keep_recorded_config(workdir: str) -> str | None:
  """Renames ``config.json`` to the next free ``config.<n>.json``; returns the new name."""
  path = epath.Path(workdir) / checkpoint.CONFIG_FILE
  if not path.exists():
    return None
  n = 1
  while (epath.Path(workdir) / f'config.{n}.json').exists():
    n += 1
  target = epath.Path(workdir) / f'config.{n}.json'
  path.rename(target)
  return os.fspath(target)


def check_checkpoint_structure(workdir: str, state, changed: dict) -> None:
  """Raises ValueError when ``workdir``'s newest checkpoint cannot hold ``state``.

  Called before a resumed stage writes anything: an allowed change (``changed``,
  from ``check_resume``) of a key that changes the model's parameters or the
  optimiser's state (``model.name``, ``model.head``, ``optim.*``) would
  otherwise rewrite ``config.json`` and then fail to read every checkpoint,
  leaving the finished run unusable. Reads only the checkpoint's metadata.
  """
  root = epath.Path(workdir) / 'checkpoints'
  steps = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []
  if not changed or not steps:
    return
  path = root / str(steps[-1]) / 'default'
  try:
    recorded = ocp.StandardCheckpointer().metadata(path)
  except Exception:  # pylint: disable=broad-except
    return  # Unreadable metadata: a damaged checkpoint, which restoring handles.
  recorded = getattr(recorded, 'item_metadata', recorded)
  recorded = getattr(recorded, 'tree', recorded)

  def shapes(tree):
    return {
        jax.tree_util.keystr(path): tuple(getattr(leaf, 'shape', ()) or ())
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }

  # Parameters and statistics by path; the optimiser's state (optax's named tuples, stored
  # as containers of their own) by its multiset of shapes.
  before = shapes({k: recorded[k] for k in ('params', 'batch_stats')})
  now = shapes({'params': state.params, 'batch_stats': state.batch_stats})
  differences = sorted(set(before) ^ set(now)) + sorted(
      k for k in set(before) & set(now) if before[k] != now[k]
  )
  if sorted(shapes(recorded['opt_state']).values()) != sorted(shapes(state.opt_state).values()):
    differences.append('the optimiser state (opt_state)')
  if differences:
    raise ValueError(
        f'The allowed change of {sorted(changed)} changes the model or its optimiser: the '
        f'checkpoint {path.parent} holds another structure ({len(differences)} differences, '
        f'e.g. {differences[0]}), so this run cannot resume it. Nothing was written. Train '
        'the new setting in a new --workdir, or rerun without that key in --resume_allow.'
    )
