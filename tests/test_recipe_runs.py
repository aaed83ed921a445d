"""Every recipe in configs/ trains: two steps (and its stage 2) on a stand-in of its data format.

The stand-ins have the recipe's data format and class count (CIFAR's pickle folders, the
list files of ImageNet-LT / Places-LT / iNaturalist 2018 over a few JPEGs) at a small size, and
the backbone is the small CNN at 32 px for CI time; everything else -- loss and its schedule,
head, sampler, augmentation, SAM / CC-SAM, the stage-2 settings, post-hoc adjustment -- is the
recipe's own. The backbones themselves are tested in test_models.py.
"""

import glob
import importlib
import os

import numpy as np
import pytest

from helpers import REPO
from helpers import write_cifar_folder
from helpers import write_list_folder
from ltjax import train
from ltjax.data import listfile

RECIPES = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
    if os.path.basename(p) not in ('__init__.py', 'base.py', 'common.py')
)


@pytest.fixture(scope='module')
def stand_ins(tmp_path_factory):
  """data.name -> a folder with that source's stand-in (written on first use)."""
  root = tmp_path_factory.mktemp('stand_ins')
  made = {}

  def get(name):
    if name not in made:
      rng = np.random.default_rng(0)
      path = str(root / name)
      if name in ('cifar10', 'cifar100'):
        made[name] = write_cifar_folder(path, name, per_class=12, test_per_class=2, rng=rng)
      else:
        made[name] = write_list_folder(path, name, {'train': 1}, rng, max_eval=256)
    return made[name]

  return get


def small_run(config, data_dir):
  """The recipe on its stand-in: few images, the small CNN, two stage-1 steps."""
  config.data.data_dir = data_dir
  config.data.list_dir = ''
  config.data.num_workers = 0
  if config.data.imbalance_ratio > 0:  # Subsampled sources: a small long tail (10 ... 5).
    config.data.n_max, config.data.imbalance_ratio = 10, 2.0
    config.data.val_per_class = min(config.data.val_per_class, 2)
  if config.data.image_size > 32:
    config.data.image_size = config.eval.image_size = 32
  config.model.name = 'small_cnn'
  config.dtype = 'float32'
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 512, 2
  # Stage 2 in a few large steps (one epoch of the stand-in is at least one batch).
  config.stage2.batch_size = 64 if config.data.name in ('cifar10', 'cifar100') else 256
  config.stage2.num_epochs = min(config.stage2.num_epochs, 1)
  config.eval_every_epochs = config.stage2.eval_every_epochs = 1000
  config.progress_bar = False
  return config


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_trains_on_a_stand_in_of_its_data(name, stand_ins, tmp_path):
  config = importlib.import_module(f'configs.{name}').get_config()
  source = config.data.name
  if source in ('fashion_mnist', 'synthetic'):
    pytest.skip(f'{name} trains on {source}: covered by test_loop.py and the default run.')
  if source not in ('cifar10', 'cifar100') and source not in listfile.SPLITS:
    pytest.fail(f'{name}: no stand-in for data.name={source!r}; add one here.')
  config = small_run(config, stand_ins(source))
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results['accuracy']), name
  if config.stage2.num_epochs:
    assert os.path.exists(os.path.join(str(tmp_path), 'stage2', 'config.json'))
  else:
    assert int(state.step) == 2
  if config.posthoc.method != 'none':
    assert results['posthoc']['method'] == config.posthoc.method
