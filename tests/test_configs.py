"""configs/ (ltjax.configs): each recipe builds from base keys only, plans its stages, trains."""

import importlib
import json
import os
import re

import numpy as np
import pytest

from helpers import REPO
from helpers import write_places_folder
from ltjax import data
from ltjax import models
from ltjax import config_files
from ltjax import train
from ltjax.configs import base
from ltjax.configs import ce_cifar_lt
from ltjax.configs import ce_places_lt

RECIPES = sorted(
    name[len('configs/') : -len('.py')]
    for name in config_files.recipe_names()
    if name.count('/') == 1
)


def flat_keys(config):
  """The dotted keys of every leaf of ``config``."""
  keys = set()
  for key, value in config.items():
    if hasattr(value, 'items'):
      keys |= {f'{key}.{k}' for k in flat_keys(value)}
    else:
      keys.add(key)
  return keys


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_overrides_base_keys_only_and_plans_its_stages(name, tmp_path):
  module = importlib.import_module(f'ltjax.configs.{name}')
  config = module.get_config()
  assert flat_keys(config) == flat_keys(base.get_config()), name
  assert module.__doc__ and 'launch/train.py' in module.__doc__  # The run command.
  models.build_model(config.model, 10)  # Names resolve.
  stages = train.plan_stages(config, str(tmp_path))
  assert len(stages) == (2 if config.stage2.num_epochs > 0 else 1)


def test_config_arguments_are_parsed_and_checked():
  config = ce_cifar_lt.get_config('dataset=cifar10,ir=50,profile=step')
  assert (config.data.tfds_name, config.data.imbalance_ratio, config.data.profile) == (
      'cifar10',
      50.0,
      'step',
  )
  with pytest.raises(ValueError, match="Unknown config argument 'imb'"):
    ce_cifar_lt.get_config('imb=10')


def test_cc_sam_cifar_wrappers_carry_the_official_per_dataset_settings():
  cifar10 = importlib.import_module('ltjax.configs.cc_sam_cifar10_lt').get_config('ir=200')
  cifar100 = importlib.import_module('ltjax.configs.cc_sam_cifar100_lt').get_config()
  assert cifar10.data.tfds_name == 'cifar10' and cifar10.data.imbalance_ratio == 200
  assert (cifar10.cc_sam.flat_ratio, cifar10.stage2.loss.adversarial_cap) == (0.3, 1.0)
  assert cifar100.data.tfds_name == 'cifar100' and cifar100.data.imbalance_ratio == 100
  assert (cifar100.cc_sam.flat_ratio, cifar100.stage2.loss.adversarial_cap) == (0.5, 0.3)


def test_cifar_lt_recipe_on_a_tfds_stand_in(tmp_path):
  tfds_source = pytest.importorskip('ltjax.data.tfds_source')
  rng = np.random.default_rng(0)
  make = lambda n: (
      rng.integers(0, 256, (10 * n, 32, 32, 3), dtype=np.uint8),
      np.repeat(np.arange(10), n),
  )
  tfds_source.prepare_from_arrays(
      'cifar10', str(tmp_path / 'tfds'), {'train': make(50), 'test': make(8)}
  )
  config = ce_cifar_lt.get_config('dataset=cifar10,ir=10')
  assert config.data.name == 'cifar10'  # The pickle folders by default.
  config.data.name = 'tfds'  # The switch the recipes' docstrings give.
  config.data.data_dir = str(tmp_path / 'tfds')
  config.model.name = 'small_cnn'
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 80, 3
  config.progress_bar = False
  state, results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  # n_max defaults to the source's per-class count (50): counts 50 ... 5.
  counts = data.long_tail_counts(10, 50, 10)
  assert len(results['per_class_accuracy']) == 10 and int(state.step) == 3
  assert data.load_datasets(config.data).train_counts.tolist() == counts.tolist()


def test_list_file_recipe_end_to_end(tmp_path):
  write_places_folder(
      str(tmp_path / 'places'), 365, {'train': 2, 'val': 1, 'test': 1}, np.random.default_rng(0)
  )
  config = ce_places_lt.get_config()
  config.data.data_dir = str(tmp_path / 'places')
  config.data.image_size = config.eval.image_size = 32
  config.data.num_workers = 0
  config.model.name = 'small_cnn'
  config.dtype = 'float32'
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 128, 2
  config.progress_bar = False
  state, results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert int(state.step) == 2 and len(results['per_class_accuracy']) == 365
  with open(tmp_path / 'run' / 'metrics.jsonl') as f:
    splits = {json.loads(line)['split'] for line in f}
  assert splits == {'train', 'val', 'test'}  # Places-LT ships a validation list.
  batches = data.TrainBatches(
      data.load_split(config.data, 'train'),
      global_batch_size=8,
      seed=0,
      augment='imagenet',
      image_size=32,
  )
  batch = batches.batch(0)
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  np.testing.assert_array_equal(batch['image'], batches.batch(0)['image'])


def test_every_command_of_the_readme_reproduction_table_builds():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  table = readme[readme.index('## Reproducing the papers') : readme.index('## What a run writes')]
  commands = re.findall(r'`configs/([a-z0-9_]+)\.py(?::([^`]*))?`', table)
  assert len(commands) >= 15
  for name, arg in commands:
    config = importlib.import_module(f'ltjax.configs.{name}').get_config(arg or None)
    assert flat_keys(config) == flat_keys(base.get_config()), (name, arg)
