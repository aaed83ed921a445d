"""Checks a config's names and values, for every stage, before anything runs.

A misspelt key already fails when the config is parsed (the base config holds
every key and ``launch/train.py`` locks it); a misspelt *value* such as
``loss.name='balanced_sofmax'`` would otherwise fail only when the table is
read -- after the data set is loaded, or, for stage 2, after stage 1 has
trained for hours -- and a value no run can mean, such as a negative learning
rate, would train (by gradient ascent) to the end. ``check_names`` reads every
such name of stage 1 and of ``config.stage2`` against the table it selects
from; ``check_values`` every number against its range (``value_rules``: one
rule for each numeric key of ``configs/base.py``, worded as the fix) and the
values that contradict each other (batch sizes and the devices, SAM's radii
and their boundaries, ``stage2.feature_cache='on'`` and what it needs), naming
the exact key -- ``stage2.optim.lr``, not the stage-1 key stage 2 inherits
from. Each reports all its problems at once.

The ranges refuse what inverts a method (a negative rate, decay, radius,
margin or adjustment) or cannot be meant (a momentum of 1, label smoothing of
1, a non-finite number); where a value is unusual but means something (a
learning rate of 0, beta = 1 for 1 / n_c weights) it passes.
"""

import math
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

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
from ltjax.param_paths import named_leaves
from ltjax.param_paths import path_mask
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
      'sam.batch_norm_statistics': optim.SAM_BATCH_NORM_STATISTICS,
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
    if key.startswith('stage2.') and not _stage2_runs(config):
      continue
    value = _get(config, key)
    if value not in valid:
      problems.append(f'Unknown {key} {value!r}; valid: {sorted(valid)}.')
  # model.head_init applies to stage 2's head too (a new head there is built with it).
  heads = {'model.head': config.model.head}
  if _stage2_runs(config) and config.stage2.head not in STAGE2_HEAD_KEEP:
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


class Rule(NamedTuple):
  """The valid values of one numeric key.

  A value outside is reported as ``config.<key>=<value> must be <must_be><note>.``;
  where ``when(config)`` is False the config does not read the key, and it is not checked.
  """

  valid: Callable[[Any], bool]
  must_be: str
  note: str = ''
  when: Callable[[ml_collections.ConfigDict], bool] | None = None


def _real(value) -> bool:
  """A finite int or float; a bool is a switch, not a number."""
  return (
      isinstance(value, (int, float, np.integer, np.floating))
      and not isinstance(value, (bool, np.bool_))
      and math.isfinite(value)
  )


def _integer(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _numbers(value, item=_real) -> bool:
  return isinstance(value, (tuple, list)) and all(item(v) for v in value)


def at_least(low, note: str = '') -> Rule:
  return Rule(lambda v: _real(v) and v >= low, f'>= {low}', note)


def above(low, note: str = '') -> Rule:
  return Rule(lambda v: _real(v) and v > low, f'> {low}', note)


def within(low, high, note: str = '', *, high_open: bool = False) -> Rule:
  """[low, high], or [low, high) with ``high_open``."""
  if high_open:
    return Rule(lambda v: _real(v) and low <= v < high, f'in [{low}, {high})', note)
  return Rule(lambda v: _real(v) and low <= v <= high, f'in [{low}, {high}]', note)


def increasing(note: str = '', *, integers: bool = False) -> Rule:
  """A tuple of epochs >= 0, each after the one before (integers: whole epochs)."""
  item = (lambda v: _integer(v) and v >= 0) if integers else (lambda v: _real(v) and v >= 0)
  return Rule(
      lambda v: _numbers(v, item) and all(a < b for a, b in zip(v, v[1:])),
      f'a tuple of {"whole " if integers else ""}epochs >= 0 in increasing order',
      note,
  )


# numpy's RandomState takes seeds below 2**32, and data.subsample_seed + 1 seeds the split.
SEED = Rule(
    lambda v: _integer(v) and 0 <= v <= 2**32 - 2,
    'an integer in [0, 2**32 - 2]',
    ' (numpy seeds its generators with it)',
)
_NEGATIVE_FAVOURS_HEAD = ' (a negative value favours the head classes instead of the tail)'
_WEIGHT = ' (0: off; a negative weight would maximise the term)'


def _training_rules() -> dict[str, Rule]:
  """The rules of configs/base.py's loss_config(), optim_config() and schedule_config()."""
  return {
      'loss.label_smoothing': within(0, 1, ' (1 would ignore the labels)', high_open=True),
      'loss.focal_gamma': at_least(0, ' (0: cross-entropy)'),
      'loss.cb_beta': within(0, 1, ' (0: uniform class weights; 1: 1 / n_c)'),
      'loss.ldam_max_margin': at_least(0, _NEGATIVE_FAVOURS_HEAD),
      'loss.ldam_scale': above(0, ' (s multiplies the logits)'),
      'loss.la_tau': at_least(0, _NEGATIVE_FAVOURS_HEAD),
      'loss.vs_gamma': at_least(0, _NEGATIVE_FAVOURS_HEAD),
      'loss.vs_tau': at_least(0, _NEGATIVE_FAVOURS_HEAD),
      'loss.lort_delta': within(
          0, 1, ' (0: cross-entropy; 1 would ignore the labels)', high_open=True
      ),
      'loss.switch_epoch': at_least(0, ' (a 0-indexed epoch)'),
      'loss.drw_beta': within(0, 1, ' (0: uniform class weights; 1: 1 / n_c)'),
      'loss.adrw_nu': at_least(0, _NEGATIVE_FAVOURS_HEAD),
      'loss.feature_norm_weight': at_least(0, _WEIGHT),
      'loss.lwr_weight': at_least(0, _WEIGHT),
      'loss.lwr_theta': within(-1, 1, ' (a cosine threshold; -1 repels every pair)'),
      'loss.lwr_tau': above(0, ' (a temperature dividing the cosines)'),
      'loss.adversarial_weight': at_least(0, ' (0: off; a negative lambda pulls, not pushes)'),
      'loss.adversarial_cap': within(0, 1, ' (the largest share of the adversarial loss)'),
      'loss.adversarial_div': above(0, ' (it divides the class weights)'),
      'optim.lr': at_least(0, ' (0 trains nothing; a negative rate ascends the loss)'),
      'optim.momentum': within(0, 1, ' (0: no momentum; 1 never forgets)', high_open=True),
      'optim.weight_decay': at_least(0, ' (a negative decay grows the weights)'),
      'schedule.epoch_offset': at_least(0, ' (1: scheduler.step() at the start of each epoch)'),
      'schedule.warmup_epochs': at_least(0, ' (0: no warm-up)'),
      'schedule.warmup_start_factor': within(0, 1, ' (of optim.lr)'),
      'schedule.milestones': increasing(' (the multistep decays), e.g. (160, 180)'),
      'schedule.gamma': above(0, ' (the multistep decay factor, e.g. 0.1)'),
  }


def value_rules() -> dict[str, Rule]:
  """Every numeric key of configs/base.py -> its valid values (tests: a new key needs one)."""
  rules = {
      'seed': SEED,
      'batch_size': above(0),
      'eval_batch_size': above(0),  # Rounded up to the devices (predict).
      'num_epochs': Rule(
          lambda v: _real(v) and v > 0,
          '> 0',
          ' (or set config.num_train_steps > 0)',
          when=lambda c: not (_integer(c.num_train_steps) and c.num_train_steps > 0),
      ),
      'num_train_steps': Rule(_integer, 'an integer', ' (<= 0: config.num_epochs sets the length)'),
      'log_every_steps': above(0),
      'eval_every_epochs': above(
          0,
          ' (evaluation and its checkpoint also run at the end; a large value evaluates only '
          'there)',
      ),
      'checkpoint_every_steps': at_least(0, ' (0: checkpoints at evaluations only)'),
      'keep_checkpoints': above(0, ': resuming needs a kept checkpoint'),
      'checkpoint_every_minutes': at_least(0, ' (0: off)'),
      'profile_steps': Rule(
          lambda v: _numbers(v, _integer) and (not v or (len(v) == 2 and 0 <= v[0] <= v[1])),
          '() or (first, last) with 0 <= first <= last',
          ', e.g. (100, 105)',
      ),
      'data.imbalance_ratio': Rule(
          lambda v: _real(v) and (v == 0 or v > 1),
          '0 or > 1',
          ' (n_max / n_min of the long tail; 0 keeps the source as it is)',
      ),
      'data.n_max': at_least(0, " (0: the source's per-class count)"),
      'data.subsample_seed': SEED,
      'data.val_per_class': at_least(0, ' (0: no validation split)'),
      'data.open_classes': Rule(
          lambda v: _numbers(v, lambda c: _integer(c) and c >= 0) and len(set(v)) == len(v),
          'a tuple of distinct class ids >= 0',
          ' (checked against the class count when the data is loaded)',
      ),
      'data.read_threads': at_least(0, ' (0: read in the main thread)'),
      'data.num_workers': at_least(0, ' (0: no worker processes)'),
      'data.crop_padding': at_least(0),
      'data.image_size': above(0),
      'data.mixup_alpha': at_least(0, ' (0: no mixup)'),
      'data.synthetic.num_classes': at_least(2),
      'data.synthetic.per_class': above(0),
      'data.synthetic.image_shape': Rule(
          lambda v: _numbers(v, lambda n: _integer(n) and n > 0) and len(v) == 3,
          '(height, width, channels), three integers > 0',
      ),
      'data.synthetic.seed': SEED,
      'model.head_scale': above(0, " (the cosine head's logit scale)"),
      'model.head_tau': at_least(0, ' (0: the linear head; 1: unit-norm class vectors)'),
      'model.head_seed': SEED,
      'model.lwr_projection_dim': at_least(0, ' (0: the feature dimension)'),
      'model.bn_scale_init': above(0, ' (1: BatchNorm as usual)'),
      'model.width': at_least(0, " (0: the architecture's own)"),
      **_training_rules(),
      'sam.rho': at_least(0, ' (0: off)'),
      'sam.rho_boundaries': increasing(' (where sam.rho_values change)', integers=True),
      'sam.rho_values': Rule(
          lambda v: _numbers(v, lambda r: _real(r) and r >= 0),
          'a tuple of radii >= 0',
          ' (len(sam.rho_boundaries) + 1 of them; (): sam.rho)',
      ),
      'cc_sam.flat_ratio': within(0, 1, ' (0: off)'),
      'cc_sam.noise_ratio': at_least(0, ' (it scales the radii)'),
      'cc_sam.rho': at_least(0, " (|eps_c| of cc_sam.radius='fixed')"),
      'stage2.num_epochs': at_least(0, ' (0: no stage 2)'),
      'stage2.batch_size': at_least(0, " (0: stage 1's)"),
      'stage2.mixup_alpha': at_least(0, ' (0: no mixup)'),
      'stage2.eval_every_epochs': above(0),
      'stage2.max_norm': at_least(0, ' (0: no MaxNorm)'),
      **{f'stage2.{key}': rule for key, rule in _training_rules().items()},
      'eval.image_size': at_least(0, ' (0: no resize at test)'),
      'eval.many_threshold': at_least(0, ' (training images)'),
      'eval.few_threshold': at_least(0, ' (training images)'),
      'eval.group_sizes': Rule(
          lambda v: _numbers(v, lambda n: _integer(n) and n >= 0) and len(v) == 2,
          "(many, medium) for eval.groups='rank'",
          ': two class counts >= 0, e.g. (390, 445) for ImageNet-LT; the rest are few (their '
          'sum, at most the number of classes, is checked when the data is loaded)',
          when=lambda c: c.eval.get('groups', 'threshold') == 'rank',
      ),
      'posthoc.grid': Rule(
          _numbers, 'a tuple of finite numbers', ' ((): ltjax.eval.posthoc.DEFAULT_GRID)'
      ),
  }
  # Stage 2's settings are read only when stage 2 runs.
  for key, rule in rules.items():
    if key.startswith('stage2.') and key != 'stage2.num_epochs':
      rules[key] = rule._replace(when=_stage2_runs)
  return rules


# Regexes over parameter paths (ltjax.param_paths); stage2.* only when stage 2 runs.
REGEX_KEYS = ('trainable', 'optim.weight_decay_mask', 'sam.perturb')
STAGE2_REGEX_KEYS = ('stage2.trainable', 'stage2.optim.weight_decay_mask')
_MISSING = object()


def _get_or_missing(config: ml_collections.ConfigDict, key: str):
  """The value of ``key``; _MISSING in a config older than the key (a recorded run)."""
  try:
    return _get(config, key)
  except (KeyError, AttributeError):
    return _MISSING


def _holds(rule: Rule, value) -> bool:
  try:
    return bool(rule.valid(value))
  except TypeError:  # None or a string where a number belongs.
    return False


def _applies(rule: Rule, config: ml_collections.ConfigDict) -> bool:
  try:
    return rule.when is None or bool(rule.when(config))
  except TypeError:  # The key it depends on is None: check this one regardless.
    return True


def check_values(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Raises ValueError listing every value no run can mean (``value_rules``), with its fix.

  Then the values that contradict another key: batch sizes that the devices do
  not divide, SAM's radii against their boundaries, the class-group thresholds,
  Nesterov without momentum, parameter-path regexes that do not compile, and
  ``stage2.feature_cache='on'`` where the cache would not be exact. Stage 2's
  are checked only when stage 2 runs; a stage-2 value of 0 that means "stage
  1's" (``stage2.batch_size``) is checked as the value stage 2 will use, under
  the key that sets it.
  """
  problems, bad = [], set()
  for key, rule in value_rules().items():
    value = _get_or_missing(config, key)
    if value is _MISSING or not _applies(rule, config):
      continue
    if not _holds(rule, value):
      bad.add(key)
      problems.append(f'config.{key}={value!r} must be {rule.must_be}{rule.note}.')
  # Relations between keys, each once its keys are valid on their own.
  problems += _batch_problems(config, device_count or jax.device_count(), bad)
  problems += _relation_problems(config, bad)
  problems += _regex_problems(config)
  problems += _feature_cache_problems(config, bad)
  _raise(problems, 'config values are out of range')


def _stage2_runs(config: ml_collections.ConfigDict) -> bool:
  return _real(config.stage2.num_epochs) and config.stage2.num_epochs > 0


def _batch_problems(config: ml_collections.ConfigDict, devices: int, bad: set) -> list[str]:
  """Batch sizes the mesh's devices do not divide (each device takes an equal share)."""
  sizes = {'batch_size': config.batch_size}
  if _stage2_runs(config) and config.stage2.batch_size:
    sizes['stage2.batch_size'] = config.stage2.batch_size
  return [
      f'config.{key}={value} is not divisible by the {devices} devices of the mesh; '
      f'use a multiple of {devices}.'
      for key, value in sizes.items()
      if key not in bad and value % devices
  ]


def _relation_problems(config: ml_collections.ConfigDict, bad: set) -> list[str]:
  problems = []
  if not {'sam.rho_values', 'sam.rho_boundaries'} & bad and config.sam.rho_values:
    values, boundaries = tuple(config.sam.rho_values), tuple(config.sam.rho_boundaries)
    n = len(boundaries) + 1
    if len(values) != n:
      problems.append(
          f'config.sam.rho_values={values} needs {n} value{"s" if n > 1 else ""}, one per '
          f'interval of config.sam.rho_boundaries={boundaries} (len + 1); or set '
          'sam.rho_values=() for the constant sam.rho.'
      )
  groups = config.eval.get('groups', 'threshold')
  group_sizes = config.eval.get('group_sizes', ())
  if groups != 'rank' and group_sizes:
    problems.append(
        f"config.eval.group_sizes={group_sizes} is read only with eval.groups='rank' "
        f"(eval.groups={groups!r}): set eval.groups='rank', or group_sizes=()."
    )
  many, few = config.eval.many_threshold, config.eval.few_threshold
  if (
      groups == 'threshold'
      and not {'eval.many_threshold', 'eval.few_threshold'} & bad
      and few > many + 1
  ):
    # many: n_c > many_threshold, few: n_c < few_threshold; both would hold between them.
    problems.append(
        f'config.eval.few_threshold={few} must be <= config.eval.many_threshold + 1 = '
        f'{many + 1}: a class with {many} < n_c < {few} training images would be both many '
        'and few. Swap the two values?'
    )
  prefixes = ('', 'stage2.') if _stage2_runs(config) else ('',)
  for prefix in prefixes:
    optim_config = config.stage2.optim if prefix else config.optim
    if optim_config.nesterov and f'{prefix}optim.momentum' not in bad:
      if optim_config.momentum == 0:  # optax (unlike PyTorch) would drop Nesterov silently.
        problems.append(
            f'config.{prefix}optim.nesterov=True needs config.{prefix}optim.momentum > 0 '
            '(it is 0): set a momentum, or nesterov=False.'
        )
  if config.data.get('decoder') == 'dali' and config.data.skip_corrupt:
    problems.append(
        "config.data.decoder='dali' cannot skip unreadable images (config.data.skip_corrupt="
        "True): DALI decodes them in the training process. Use data.decoder='pillow', or fix "
        'the files and set skip_corrupt=False.'
    )
  return problems


def _regex_problems(config: ml_collections.ConfigDict) -> list[str]:
  """Parameter-path regexes that do not compile (re.error is no ValueError)."""
  keys = REGEX_KEYS + (STAGE2_REGEX_KEYS if _stage2_runs(config) else ())
  problems = []
  for key in keys:
    value = _get_or_missing(config, key)
    if value is _MISSING:
      continue
    try:
      re.compile(value)
    except (re.error, TypeError) as e:
      problems.append(
          f'config.{key}={value!r} is not a regular expression ({e}); it must fully match '
          "parameter paths such as 'head/kernel' ('.*': all)."
      )
  return problems


def _stage2_trains_head_only(config: ml_collections.ConfigDict) -> bool:
  """Whether ``stage2.trainable`` matches head parameters only, on stage 2's model.

  The parameter names come from an abstract initialisation (shapes only, no
  compute; the names do not depend on the input size or the class count). A
  model that cannot be built here counts as head-only: building it is
  checked, with its own message, when the stage is planned.
  """
  trainable = config.stage2.trainable
  if not trainable:
    return False  # '': everything trains.
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  if config.stage2.head not in STAGE2_HEAD_KEEP:
    model_config.head = config.stage2.head
  try:
    model = models.build_model(model_config, 10)
    params = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    )['params']
    mask = path_mask(params, trainable)
  except Exception:  # pylint: disable=broad-except
    return True  # Not this check's to report (see the docstring).
  return all(name.startswith('head/') for name, trains in named_leaves(mask) if trains)


FEATURE_CACHE_RESIZED_FOR_EVAL = (
    'eval.image_size > 0: cached features come from the evaluation resize + '
    'centre crop, which the training path does not apply'
)


def feature_cache_unavailable_reasons(
    *, head_only: bool, train_bn: bool, augment: str, mixup_alpha: float, eval_image_size: int = 0
) -> list[str]:
  """Why cached features would not equal the ordinary path (empty: they would).

  ``FEATURE_CACHE_RESIZED_FOR_EVAL`` is the one reason ``stage2.feature_cache='on'``
  accepts (with a warning): for list-file data sets of varying image sizes,
  classifier re-training without augmentation has no uncached equivalent, and
  the centre-cropped features are what cRT-style re-training then means.
  """
  reasons = []
  if not head_only:
    reasons.append('stage2.trainable trains parameters outside head/')
  if train_bn:
    reasons.append(
        "stage2.bn='update' changes the backbone's BatchNorm statistics " "(set stage2.bn='frozen')"
    )
  if augment != 'none':
    reasons.append(f"images are augmented ({augment!r}; set stage2.augment='none')")
  if mixup_alpha > 0:
    reasons.append('stage2.mixup_alpha > 0 mixes images')
  if eval_image_size > 0:
    reasons.append(FEATURE_CACHE_RESIZED_FOR_EVAL)
  if jax.process_count() > 1:
    reasons.append('more than one process')
  return reasons


def _feature_cache_problems(config: ml_collections.ConfigDict, bad: set) -> list[str]:
  """``stage2.feature_cache='on'`` where the cache would not be exact: before stage 1 trains."""
  if not _stage2_runs(config) or config.stage2.get('feature_cache', 'auto') != 'on':
    return []
  if {'stage2.mixup_alpha', 'eval.image_size'} & bad:
    return []
  s2 = config.stage2
  reasons = feature_cache_unavailable_reasons(
      head_only=_stage2_trains_head_only(config),
      train_bn=s2.bn == 'update',
      augment=s2.augment or config.data.augment,
      mixup_alpha=s2.mixup_alpha,
      eval_image_size=config.eval.image_size,
  )
  # 'on' accepts features of the evaluation resize (with a warning, when the stage starts).
  reasons = [r for r in reasons if r != FEATURE_CACHE_RESIZED_FOR_EVAL]
  if not reasons:
    return []
  return [
      "config.stage2.feature_cache='on' but the feature cache would not be exact: "
      + '; '.join(reasons)
      + ". Change those, or set stage2.feature_cache='auto' (stage 2 then trains through "
      'the backbone where the cache would not be exact).'
  ]
