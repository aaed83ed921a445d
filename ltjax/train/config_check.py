"""Checks a config's names and sizes, for every stage, before anything runs.

A misspelt key already fails when the config is parsed (the base config holds
every key and ``launch/train.py`` locks it); a misspelt *value* such as
``loss.name='balanced_sofmax'`` would otherwise fail only when the table is
read -- after the data set is loaded, or, for stage 2, after stage 1 has
trained for hours. ``check_names`` reads every such value of stage 1 and of
``config.stage2`` against the table it selects from; ``check_values`` every
size, length and interval (positive, and batch sizes divisible by the
devices), naming the exact key -- ``stage2.batch_size``, not the stage-1 key
stage 2 inherits from. Each reports all its problems at once.
"""

import jax
import ml_collections

from ltjax import data
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax.data import datasets
from ltjax.data import longtail
from ltjax.data import pipeline
from ltjax.data import samplers
from ltjax.eval import metrics as eval_metrics
from ltjax.losses import cc_sam
from ltjax.losses import class_balanced
from ltjax.losses import objective
from ltjax.optim import schedules
from ltjax.train import final_adjustment

STAGE2_INIT = ('best', 'latest')
STAGE2_BN = ('update', 'frozen')
STAGE2_FEATURE_CACHE = ('auto', 'on', 'off')
STAGE2_HEAD_KEEP = ('keep', 'reinit')


def _training_names(prefix: str = '') -> dict[str, tuple[str, ...]]:
  """Key -> valid names for the loss, optimiser and schedule blocks under ``prefix``."""
  return {
      f'{prefix}loss.name': tuple(losses.LOSSES),
      f'{prefix}loss.schedule': tuple(losses.SCHEDULES),
      f'{prefix}loss.cb_variant': tuple(class_balanced.VARIANTS),
      f'{prefix}loss.weighted_reduction': tuple(losses.WEIGHTED_REDUCTIONS),
      f'{prefix}loss.lwr_schedule': tuple(objective.LWR_SCHEDULES),
      f'{prefix}optim.name': tuple(optim.OPTIMIZERS),
      f'{prefix}schedule.name': tuple(schedules.SCHEDULES),
      f'{prefix}schedule.granularity': tuple(schedules.GRANULARITIES),
  }


def name_tables() -> dict[str, tuple[str, ...]]:
  """Every config key whose value names an entry of a table -> the valid names."""
  return {
      'dtype': tuple(models.DTYPES),
      'data.name': tuple(datasets.SOURCES),
      'data.profile': tuple(longtail.PROFILES),
      'data.selection': tuple(longtail.SELECTIONS),
      'data.sampler': tuple(samplers.SAMPLERS),
      'data.augment': tuple(data.AUGMENTATIONS),
      'data.decoder': pipeline.DECODERS,
      'model.name': tuple(models.BACKBONES),
      'model.head': tuple(models.HEADS),
      'model.head_init': tuple(models.HEAD_INITS),
      'model.pretrained_head': tuple(models.pretrained.HEAD_MODES),
      **_training_names(),
      'cc_sam.radius': tuple(cc_sam.RADII),
      'cc_sam.implementation': tuple(losses.CC_SAM_IMPLEMENTATIONS),
      'cc_sam.direction': tuple(cc_sam.DIRECTIONS),
      'posthoc.method': tuple(final_adjustment.METHODS),
      'eval.groups': eval_metrics.GROUPINGS,
      'stage2.init_from': STAGE2_INIT,
      'stage2.head': STAGE2_HEAD_KEEP + tuple(models.HEADS),
      'stage2.bn': STAGE2_BN,
      'stage2.sampler': tuple(samplers.SAMPLERS),
      'stage2.augment': ('',) + tuple(data.AUGMENTATIONS),
      'stage2.feature_cache': STAGE2_FEATURE_CACHE,
      **_training_names('stage2.'),
  }


def flatten(tree, prefix: str = '') -> dict:
  """A nested dict / ConfigDict -> {'a.b': value} (tuples and lists are values)."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  out = {}
  for key, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def _get(config: ml_collections.ConfigDict, key: str):
  value = config
  for part in key.split('.'):
    value = value[part]
  return value


def check_names(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError listing every key whose value is not in its table.

  Stage 2's keys are checked only when stage 2 runs (``stage2.num_epochs > 0``).
  """
  problems = []
  for key, valid in name_tables().items():
    if key.startswith('stage2.') and config.stage2.num_epochs <= 0:
      continue
    value = _get(config, key)
    if value not in valid:
      problems.append(f'Unknown {key} {value!r}; valid: {sorted(valid)}.')
  # model.head_init applies to stage 2's head too (a new head there is built with it).
  heads = {'model.head': config.model.head}
  if config.stage2.num_epochs > 0 and config.stage2.head not in STAGE2_HEAD_KEEP:
    heads['stage2.head'] = config.stage2.head
  for key, head in heads.items():
    if head in models.HEADS and config.model.get('head_init', 'torch') in models.HEAD_INITS:
      try:
        models.check_head_init(head, config.model.get('head_init', 'torch'))
      except ValueError as error:
        problems.append(f'{key}={head!r}: {error}')
  _raise(problems, 'config values name nothing')


def _raise(problems: list[str], what: str) -> None:
  if problems:
    raise ValueError(
        problems[0]
        if len(problems) == 1
        else f'{len(problems)} {what}:\n  ' + '\n  '.join(problems)
    )


def check_values(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ValueError listing every size or interval no run can use, with its fix.

  Stage 2's are checked only when stage 2 runs; a stage-2 value of 0 that means
  "stage 1's" (``stage2.batch_size``) is checked as the value stage 2 will use,
  under the key that sets it.
  """
  devices = device_count or jax.device_count()
  problems = []

  def positive(key, value, fix=''):
    if value <= 0:
      problems.append(f'config.{key}={value} must be > 0{fix}.')

  def divisible(key, value):
    if value > 0 and value % devices:
      problems.append(
          f'config.{key}={value} is not divisible by the {devices} devices of the mesh; '
          f'use a multiple of {devices}.'
      )

  positive('batch_size', config.batch_size)
  divisible('batch_size', config.batch_size)
  positive('eval_batch_size', config.eval_batch_size)  # Rounded up to the devices (predict).
  if config.num_train_steps <= 0:
    positive('num_epochs', config.num_epochs, ' (or set config.num_train_steps > 0)')
  positive('log_every_steps', config.log_every_steps)
  positive(
      'eval_every_epochs',
      config.eval_every_epochs,
      ' (evaluation and its checkpoint also run at the end; a large value evaluates only there)',
  )
  positive('keep_checkpoints', config.keep_checkpoints, ': resuming needs a kept checkpoint')
  profile = tuple(config.get('profile_steps', ()))
  if profile and (len(profile) != 2 or not 0 <= profile[0] <= profile[1]):
    problems.append(
        f'config.profile_steps={profile} must be () or (first, last) with 0 <= first <= last, '
        'e.g. (100, 105).'
    )
  if config.checkpoint_every_steps < 0:
    problems.append(
        f'config.checkpoint_every_steps={config.checkpoint_every_steps} must be >= 0 (0: '
        'checkpoints at evaluations only).'
    )
  if config.data.n_max < 0:
    problems.append(
        f"config.data.n_max={config.data.n_max} must be >= 0 (0: the source's per-class count)."
    )
  if config.data.get('decoder') == 'dali' and config.data.skip_corrupt:
    problems.append(
        "config.data.decoder='dali' cannot skip unreadable images (config.data.skip_corrupt="
        "True): DALI decodes them in the training process. Use data.decoder='pillow', or fix "
        'the files and set skip_corrupt=False.'
    )
  groups = config.eval.get('groups', 'threshold')
  group_sizes = tuple(config.eval.get('group_sizes', ()))
  if groups == 'rank' and (
      len(group_sizes) != 2 or not all(isinstance(n, int) and n >= 0 for n in group_sizes)
  ):
    problems.append(
        f"config.eval.group_sizes={group_sizes} must be (many, medium) for eval.groups='rank': "
        'two class counts >= 0, e.g. (390, 445) for ImageNet-LT; the rest are few (their sum, '
        'at most the number of classes, is checked when the data is loaded).'
    )
  elif groups != 'rank' and group_sizes:
    problems.append(
        f"config.eval.group_sizes={group_sizes} is read only with eval.groups='rank' "
        f"(eval.groups={groups!r}): set eval.groups='rank', or group_sizes=()."
    )
  s2 = config.stage2
  if s2.num_epochs < 0:
    problems.append(f'config.stage2.num_epochs={s2.num_epochs} must be >= 0 (0: no stage 2).')
  if s2.num_epochs > 0:
    if s2.batch_size < 0:
      problems.append(f"config.stage2.batch_size={s2.batch_size} must be >= 0 (0: stage 1's).")
    elif s2.batch_size:
      divisible('stage2.batch_size', s2.batch_size)
    positive('stage2.eval_every_epochs', s2.eval_every_epochs)
  _raise(problems, 'config values are out of range')
