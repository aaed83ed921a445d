"""Where every recipe setting comes from: the table a paper recipe is built from.

A paper recipe (``configs/<method>_<data>.py``) declares each setting that
changes its number -- backbone, data selection, augmentation, batch, epochs,
optimiser, schedule and its stepping convention, weight decay and what it
covers, loss, re-weighting, sampler, head, SAM, stage 2, test-time
augmentation, evaluation interval and model selection -- as a row
``(key, value, source)`` of a :class:`Settings` table, and its ``get_config``
is that table applied to ``configs/base.py``. A source is one of

  paper     the paper's section, table or equation;
  code      an official repository's file at a commit (``owner/name@commit path``);
  protocol  the protocol the paper builds on (e.g. LDAM-DRW's CIFAR-LT construction);
  assumed   no source states it: the reason for the value chosen;
  run       a setting that cannot change a number (workers, dtype of a reading, logging),
            only for keys in ``OPERATIONAL``.

``tests/test_provenance.py`` builds every recipe with every documented argument
combination and checks that (1) the config equals each declared value, (2)
every number-changing key whose value differs from the base is declared, and
(3) the keys every recipe must state (``REQUIRED``) are declared even where
they equal the base. An undeclared difference is a failing test.

    python -m ltjax.configs configs/wb_cifar_lt.py:dataset=cifar100

prints a recipe's table (key, value, source).
"""

import dataclasses
import re
from typing import Any

import ml_collections

from ltjax.configs import base

SOURCE_KINDS = ('paper', 'code', 'protocol', 'assumed', 'run')

# Keys that cannot change a run's numbers: where files are, how fast and how verbosely it
# runs, how it is checkpointed. Every other key of the base is number-changing.
OPERATIONAL = frozenset(
    {
        'eval_batch_size',
        'log_every_steps',
        'checkpoint_every_steps',
        'keep_checkpoints',
        'checkpoint_every_minutes',
        'progress_bar',
        'profile_steps',
        'data.data_dir',
        'data.tfds_name',
        'data.list_dir',
        'data.records_dir',
        'data.skip_corrupt',
        'data.verify_eval_images',
        'data.read_threads',
        'data.num_workers',
        'data.device_augment',  # The same draws applied on device (tests/test_device_augment.py).
        'data.decoder',
        'data.open_dir',
        'cc_sam.implementation',  # Closed form and per-class loop are equal (tests/test_cc_sam.py).
        'stage2.feature_cache',  # Exact (tests/test_feature_cache.py).
    }
)

# What every paper recipe states, even where it keeps the base value.
REQUIRED = (
    'seed',
    'dtype',
    'batch_size',
    'num_epochs',
    'eval_every_epochs',
    'data.name',
    'data.imbalance_ratio',
    'data.selection',
    'data.sampler',
    'data.augment',
    'data.mixup_alpha',
    'data.val_per_class',
    'model.name',
    'model.head',
    'model.head_init',
    'loss.name',
    'loss.schedule',
    'optim.lr',
    'optim.momentum',
    'optim.nesterov',
    'optim.weight_decay',
    'optim.weight_decay_mask',
    'schedule.name',
    'schedule.granularity',
    'schedule.epoch_offset',
    'sam.rho',
    'cc_sam.flat_ratio',
    'eval.flip_tta',
    'eval.groups',
    'stage2.num_epochs',
)
# Stated when the recipe has a second stage.
REQUIRED_STAGE2 = (
    'stage2.init_from',
    'stage2.head',
    'stage2.trainable',
    'stage2.bn',
    'stage2.batch_size',
    'stage2.sampler',
    'stage2.augment',
    'stage2.mixup_alpha',
    'stage2.eval_every_epochs',
    'stage2.max_norm',
    'stage2.loss.name',
    'stage2.optim.lr',
    'stage2.optim.momentum',
    'stage2.optim.weight_decay',
    'stage2.optim.weight_decay_mask',
    'stage2.schedule.name',
    'stage2.schedule.granularity',
    'stage2.schedule.epoch_offset',
)


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a value comes from: ``kind`` (one of SOURCE_KINDS) and where in it."""

  kind: str
  where: str

  def __post_init__(self):
    if self.kind not in SOURCE_KINDS:
      raise ValueError(f'Unknown source kind {self.kind!r}; valid: {SOURCE_KINDS}.')
    if not self.where.strip():
      raise ValueError(f'A {self.kind} source must say where (or, assumed, why).')
    if self.kind == 'code' and not re.match(r'^[\w.-]+/[\w.-]+@[0-9a-f]{7,40} \S', self.where):
      raise ValueError(f"A code source is 'owner/name@commit path ...'; got {self.where!r}.")

  def __str__(self) -> str:
    return f'{self.kind}: {self.where}'


def paper(where: str) -> Source:
  return Source('paper', where)


def protocol(where: str) -> Source:
  return Source('protocol', where)


def assumed(why: str) -> Source:
  return Source('assumed', why)


def run(why: str) -> Source:
  return Source('run', why)


@dataclasses.dataclass(frozen=True)
class Repo:
  """An official repository at a commit: ``Repo('kaidic/LDAM-DRW', '2536330')('cifar_train.py')``."""

  name: str
  commit: str

  def __call__(self, path: str) -> Source:
    return Source('code', f'{self.name}@{self.commit} {path}')


@dataclasses.dataclass(frozen=True)
class Paper:
  """A paper by short name: ``Paper('LDAM-DRW')('Sec. 4')`` -> 'paper: LDAM-DRW Sec. 4'."""

  name: str

  def __call__(self, where: str) -> Source:
    return paper(f'{self.name} {where}')


@dataclasses.dataclass(frozen=True)
class Setting:
  key: str
  value: Any
  source: Source


class Settings:
  """An ordered table key -> (value, source); setting a key again replaces its row.

  A recipe that builds on another (a variant, another data set) takes that
  recipe's table and sets what it changes, with the new source.
  """

  def __init__(self, rows=()):
    self._rows: dict[str, Setting] = {}
    for row in rows:
      self.set(row.key, row.value, row.source)

  def set(self, key: str, value: Any, source: Source) -> 'Settings':
    if not isinstance(source, Source):
      raise TypeError(f'{key}: the source must be a provenance.Source, got {source!r}.')
    self._rows[key] = Setting(key, value, source)
    return self

  def remove(self, *keys: str) -> 'Settings':
    """Drops rows (their keys return to the base value), e.g. a source's rows that a
    recipe built on another data set does not use."""
    for key in keys:
      del self._rows[key]
    return self

  def __iter__(self):
    return iter(self._rows.values())

  def __contains__(self, key: str) -> bool:
    return key in self._rows

  def __getitem__(self, key: str) -> Setting:
    return self._rows[key]

  def __len__(self) -> int:
    return len(self._rows)

  def copy(self) -> 'Settings':
    return Settings(self)

  def config(self) -> ml_collections.ConfigDict:
    """``configs/base.py`` with every row applied (a row naming no base key fails)."""
    config = base.get_config()
    for row in self:
      parent, _, leaf = row.key.rpartition('.')
      node = _node(config, parent, row.key)
      if leaf not in node:
        raise KeyError(f'{row.key!r} is not a key of configs/base.py.')
      node[leaf] = row.value
    return config

  def render(self) -> str:
    """The table as aligned text, one row per key in key order: key, value, source."""
    rows = sorted((r.key, repr(r.value), str(r.source)) for r in self)
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return '\n'.join(f'{k:<{width[0]}}  {v:<{width[1]}}  {s}' for k, v, s in rows)


def _node(config, parent: str, key: str):
  node = config
  for part in filter(None, parent.split('.')):
    if part not in node:
      raise KeyError(f'{key!r} is not a key of configs/base.py.')
    node = node[part]
  return node


def flatten(config, prefix: str = '') -> dict[str, Any]:
  """{dotted key: value} of every leaf."""
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def problems(settings: Settings, config: ml_collections.ConfigDict) -> list[str]:
  """What a recipe's table and its config disagree on; [] when the table accounts for it all."""
  found = []
  values, defaults = flatten(config), flatten(base.get_config())
  for row in settings:
    if row.key not in values:
      found.append(f'{row.key}: declared, but not a key of configs/base.py')
    elif not _equal(values[row.key], row.value):
      found.append(f'{row.key}: declared {row.value!r}, the config has {values[row.key]!r}')
    elif row.source.kind == 'run' and row.key not in OPERATIONAL:
      found.append(f'{row.key}: changes numbers; its source cannot be "run"')
  for key, value in values.items():
    if key in OPERATIONAL or key in settings:
      continue
    if not _equal(value, defaults[key]):
      found.append(f'{key}: {value!r} differs from the base ({defaults[key]!r}), undeclared')
  required = REQUIRED + (REQUIRED_STAGE2 if values['stage2.num_epochs'] > 0 else ())
  found += [f'{key}: required, undeclared' for key in required if key not in settings]
  return found


def _equal(a, b) -> bool:
  if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
    return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and list(a) == list(b)
  return (
      type(a) is type(b)
      and a == b
      or (
          isinstance(a, (int, float))
          and isinstance(b, (int, float))
          and not isinstance(a, bool)
          and not isinstance(b, bool)
          and float(a) == float(b)
      )
  )
