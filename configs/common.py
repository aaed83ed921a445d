"""Helpers shared by recipe configs: argument parsing and the benchmark data sets.

Config files take an optional argument string after a colon, parsed by
``parse_arg``:

    --config=configs/ce_cifar_lt.py:dataset=cifar100,ir=50,profile=step
"""

import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'a=1,b=x' -> ConfigDict(a=1, b='x'), typed like ``defaults``; unknown keys fail."""
  result = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; valid: {sorted(defaults)}.')
    kind = type(defaults[key])
    result[key] = value.lower() in ('1', 'true', 'yes') if kind is bool else kind(value)
  return result


def cifar_lt(
    config: ml_collections.ConfigDict,
    *,
    dataset: str,
    imbalance_ratio: float,
    profile: str = 'exp',
    data_dir: str = '',
    source: str = 'pickle',
) -> None:
  """CIFAR-10/100-LT (Cao et al.'s construction, LDAM-DRW NeurIPS 2019).

  n_max = 5000 (CIFAR-10) or 500 (CIFAR-100); the balanced 10k test split;
  RandomCrop(32, 4) + flip and the LDAM-lineage normalisation (official code
  kaidic/LDAM-DRW, imbalance_cifar.py; see docs/references.md, 'Conventions:
  CIFAR-LT subsampling' and 'Conventions: CIFAR augmentation').

  ``source``: 'pickle' reads the python-pickle folders the official code and
  torchvision use (``cifar-10-batches-py`` / ``cifar-100-python`` in or at
  ``data.data_dir``), in their file order, so the seeded per-class selection
  is the official one; 'tfds' a prepared TFDS data_dir. A run switches with
  ``--config.data.name=tfds`` (``data.tfds_name`` is set either way).
  """
  if source not in ('pickle', 'tfds'):
    raise ValueError(f"Unknown CIFAR source {source!r}; valid: ['pickle', 'tfds'].")
  config.data.name = dataset if source == 'pickle' else 'tfds'
  config.data.tfds_name = dataset
  config.data.data_dir = data_dir
  config.data.imbalance_ratio = float(imbalance_ratio)
  config.data.profile = profile
  config.data.n_max = 0  # The source's per-class count.
  config.data.augment = 'crop_flip'
  config.data.crop_padding = 4


def large_scale_lt(
    config: ml_collections.ConfigDict, *, dataset: str, data_dir: str = '', list_dir: str = ''
) -> None:
  """ImageNet-LT, Places-LT or iNaturalist 2018 from their list files (OLTR / Decoupling).

  Already long-tailed (no subsampling). Train: RandomResizedCrop(224) + flip
  (+ ColorJitter(0.4, 0.4, 0.4) except on iNaturalist); test: Resize(256) +
  CenterCrop(224). See docs/references.md, 'Conventions: large-scale split
  files and augmentation'.
  """
  config.data.name = dataset
  config.data.data_dir = data_dir
  config.data.list_dir = list_dir
  config.data.imbalance_ratio = 0.0
  config.data.augment = 'inat' if dataset == 'inat2018' else 'imagenet'
  config.data.image_size = 224
  config.eval.image_size = 224
  config.data.num_workers = 8


def large_scale_run(config: ml_collections.ConfigDict) -> None:
  """The run settings every ImageNet-scale recipe shares (after ``large_scale_lt``).

  bfloat16 compute (float32 parameters, head and logits), evaluation in batches
  of 1000 every 5 epochs, a train row every 100 steps, and a checkpoint at least
  every 10 minutes (an epoch of iNaturalist is ~25 min on one H100: a kill
  without notice costs at most 10).
  """
  config.dtype = 'bfloat16'
  config.eval_batch_size = 1000
  config.eval_every_epochs = 5
  config.log_every_steps = 100
  config.checkpoint_every_minutes = 10.0
