"""Helpers shared by recipe configs: argument parsing and the benchmark data sets.

Config files take an optional argument string after a colon, parsed by
``parse_arg``:

    --config=configs/ce_cifar_lt.py:dataset=cifar100,ir=50,profile=step
"""

import ml_collections

from ltjax.configs import provenance


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'a=1,b=x' -> ConfigDict(a=1, b='x'), typed like ``defaults``; unknown keys fail.

  A default given as a tuple lists the documented values, the first being the
  default: a string or bool argument must be one of them (a number may be any
  value of its type; the listed ones are those the tests build).
  """
  choices = {k: v for k, v in defaults.items() if isinstance(v, tuple)}
  result = ml_collections.ConfigDict({k: v[0] if k in choices else v for k, v in defaults.items()})
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r}; valid: {sorted(defaults)}.')
    kind = type(result[key])
    result[key] = value.lower() in ('1', 'true', 'yes') if kind is bool else kind(value)
    if key in choices and kind is str and result[key] not in choices[key]:
      raise ValueError(f'Unknown {key} {result[key]!r}; valid: {choices[key]}.')
  return result


def arg_string(args) -> str:
  """The argument string of ``args`` (the inverse of ``parse_arg``)."""
  return ','.join(f'{k}={v}' for k, v in args.items())


# The protocols most recipes build on.
LDAM_DRW = provenance.Repo('kaidic/LDAM-DRW', '2536330')
CIFAR_LT = provenance.protocol(
    "Cao et al.'s CIFAR-LT, kaidic/LDAM-DRW@2536330 imbalance_cifar.py, cifar_train.py"
)
OLTR_GROUPS = provenance.protocol("OLTR's shot_acc: many n_c > 100, few n_c < 20 (training counts)")
LARGE_SCALE = provenance.protocol(
    'OLTR / Decoupling list files and transforms (Liu et al. 2019; Kang et al. 2020); '
    'docs/references.md, Conventions: large-scale split files and augmentation'
)


def cifar_lt(
    s: provenance.Settings,
    *,
    dataset: str,
    imbalance_ratio: float,
    ratio_source: provenance.Source,
    profile: str = 'exp',
    data_dir: str = '',
) -> provenance.Settings:
  """CIFAR-10/100-LT rows (Cao et al.'s construction, LDAM-DRW NeurIPS 2019).

  n_max = 5000 (CIFAR-10) or 500 (CIFAR-100); the balanced 10k test split;
  RandomCrop(32, 4) + flip and the LDAM-lineage normalisation. Read from the
  python-pickle folders the official code and torchvision use
  (``cifar-10-batches-py`` / ``cifar-100-python`` in or at ``data.data_dir``),
  in their file order, so a per-class selection is the official one; a run
  switches to a prepared TFDS set with ``--config.data.name=tfds``
  (``data.tfds_name`` is set either way). ``ratio_source`` says where the
  imbalance ratio (a column of the paper's table) comes from. The selection
  rule (``data.selection``, ``data.subsample_seed``) is the recipe's.
  """
  s.set('data.name', dataset, CIFAR_LT)
  s.set('data.tfds_name', dataset, provenance.run('the TFDS name if data.name=tfds'))
  s.set('data.data_dir', data_dir, provenance.run('where the files are'))
  s.set('data.imbalance_ratio', float(imbalance_ratio), ratio_source)
  s.set('data.profile', profile, ratio_source)
  s.set('data.n_max', 0, CIFAR_LT)  # The source's per-class count.
  s.set('data.augment', 'crop_flip', CIFAR_LT)
  s.set('data.crop_padding', 4, CIFAR_LT)
  s.set('data.val_per_class', 0, provenance.protocol('CIFAR-LT has no validation split'))
  return s


def large_scale_lt(
    s: provenance.Settings, *, dataset: str, data_dir: str = '', list_dir: str = ''
) -> provenance.Settings:
  """ImageNet-LT, Places-LT or iNaturalist 2018 from their list files (OLTR / Decoupling).

  Already long-tailed (no subsampling). Train: RandomResizedCrop(224) + flip
  (+ ColorJitter(0.4, 0.4, 0.4) except on iNaturalist); test: Resize(256) +
  CenterCrop(224). ImageNet-LT and Places-LT ship a validation list (the best
  checkpoint is chosen on it); iNaturalist 2018 tests on its validation list.
  """
  s.set('data.name', dataset, LARGE_SCALE)
  s.set('data.data_dir', data_dir, provenance.run('where the images are'))
  s.set('data.list_dir', list_dir, provenance.run('where the split files are'))
  s.set('data.imbalance_ratio', 0.0, LARGE_SCALE)
  s.set('data.selection', 'shuffle', LARGE_SCALE)  # No subsampling: the lists are the data.
  s.set('data.val_per_class', 0, LARGE_SCALE)
  s.set('data.augment', 'inat' if dataset == 'inat2018' else 'imagenet', LARGE_SCALE)
  s.set('data.image_size', 224, LARGE_SCALE)
  s.set('eval.image_size', 224, LARGE_SCALE)
  s.set('data.num_workers', 8, provenance.run('JPEG decoding workers'))
  return s


def large_scale_run(s: provenance.Settings) -> provenance.Settings:
  """The run settings every ImageNet-scale recipe shares (after ``large_scale_lt``).

  bfloat16 compute (float32 parameters, head and logits), evaluation in batches
  of 1000, a train row every 100 steps, and a checkpoint at least every 10
  minutes (an epoch of iNaturalist is ~25 min on one H100: a kill without
  notice costs at most 10). The evaluation interval is each recipe's.
  """
  s.set(
      'dtype',
      'bfloat16',
      provenance.assumed(
          'bfloat16 compute for accelerator speed (float32 parameters, head and logits); '
          'the official code trains in float32'
      ),
  )
  s.set('eval_batch_size', 1000, provenance.run('evaluation batch'))
  s.set('log_every_steps', 100, provenance.run('log interval'))
  s.set('checkpoint_every_minutes', 10.0, provenance.run('bounds what a kill costs'))
  return s
