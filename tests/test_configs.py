"""Every recipe in configs/ builds, adds no key to base.py, and plans its stages."""

import glob
import importlib
import os

import pytest

from configs import base
from conftest import REPO
from ltjax import train

RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if os.path.basename(p) not in ('__init__.py', 'base.py', 'common.py'))


def _keys(config, prefix=''):
  keys = set()
  for key, value in config.items():
    if hasattr(value, 'items'):
      keys |= _keys(value, f'{prefix}{key}.')
    else:
      keys.add(prefix + key)
  return keys


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_builds_with_base_keys_only(name, tmp_path):
  config = importlib.import_module(f'configs.{name}').get_config()
  assert _keys(config) == _keys(base.get_config())
  stages = train.plan_stages(config, str(tmp_path))
  assert len(stages) == (2 if config.stage2.num_epochs > 0 else 1)


def test_cc_sam_cifar_wrappers_carry_the_official_per_dataset_settings():
  cifar10 = importlib.import_module('configs.cc_sam_cifar10_lt').get_config('ir=200')
  cifar100 = importlib.import_module('configs.cc_sam_cifar100_lt').get_config()
  assert cifar10.data.tfds_name == 'cifar10' and cifar10.data.imbalance_ratio == 200
  assert (cifar10.cc_sam.flat_ratio, cifar10.stage2.loss.adversarial_cap) == (0.3, 1.0)
  assert cifar100.data.tfds_name == 'cifar100' and cifar100.data.imbalance_ratio == 100
  assert (cifar100.cc_sam.flat_ratio, cifar100.stage2.loss.adversarial_cap) == (0.5, 0.3)
