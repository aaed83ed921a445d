"""Every recipe in configs/ trains: two steps (and its stage 2) on a stand-in of its data format.

The stand-ins have the recipe's data format and class count (CIFAR's pickle folders, the
list files of ImageNet-LT / Places-LT / iNaturalist 2018 over a few JPEGs) at a small size.

Two tests per recipe, because compiling a real backbone on 2 CPU cores takes 10 s (ResNet-32)
to 2 min (ResNet-152 with SAM) per recipe:
  * trains: the recipe runs end to end -- loss and its schedule, head, sampler, augmentation,
    SAM / CC-SAM, stage 2, post-hoc adjustment -- with the small CNN at 32 px;
  * real model: every stage's training step with the recipe's own backbone, width and image
    size, traced with abstract values (ltjax.train.preflight): shapes, parameter names, the
    trainable regexes and head constraints of the real architecture, without compiling.
The backbones' numbers are tested in test_models.py (against torchvision).
"""

import importlib
import os

import numpy as np
import pytest

from helpers import write_cifar_folder
from helpers import write_list_folder
from ltjax import config_files
from ltjax import train
from ltjax.data import listfile
from ltjax.train import loop
from ltjax.train import preflight
from ltjax.train import stages

RECIPES = sorted(
    name[len('configs/') : -len('.py')]
    for name in config_files.recipe_names()
    if name.count('/') == 1
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


def small_run(config):
  """The recipe on its stand-in: the small CNN at 32 px, two stage-1 steps."""
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


def recipe_on_stand_in(name, stand_ins, *, skip_local_data=True):
  """The recipe reading a stand-in of its data (Fashion-MNIST and synthetic data are real)."""
  config = importlib.import_module(f'configs.{name}').get_config()
  source = config.data.name
  if source in ('fashion_mnist', 'synthetic'):
    if not skip_local_data:
      return config
    pytest.skip(f'{name} trains on {source}: covered by test_loop.py and the default run.')
  if source not in ('cifar10', 'cifar100') and source not in listfile.SPLITS:
    pytest.fail(f'{name}: no stand-in for data.name={source!r}; add one here.')
  config.data.data_dir = stand_ins(source)
  config.data.list_dir = ''
  config.data.num_workers = 0
  if config.data.imbalance_ratio > 0:  # Subsampled sources: a small long tail (10 ... 5).
    config.data.n_max, config.data.imbalance_ratio = 10, 2.0
    config.data.val_per_class = min(config.data.val_per_class, 2)
  return config


@pytest.mark.parametrize('name', RECIPES)
def test_every_stage_of_a_recipe_traces_with_its_real_model(name, stand_ins, tmp_path):
  config = recipe_on_stand_in(name, stand_ins, skip_local_data=False)
  if config.model.pretrained:  # The weights file is the user's; its loading is tested apart.
    config.model.pretrained = ''
  traced = 0
  for stage in stages.plan_stages(config, str(tmp_path)):
    stage_data = loop.load_data(stage.config, stage.workdir)
    metrics = preflight.trace_train_step(
        stage,
        train_counts=stage_data.train_counts,
        image_shape=stage_data.batches.image_shape(),
        steps_per_epoch=stage_data.steps_per_epoch,
    )
    assert metrics['loss'].shape == (), (name, stage.name)
    traced += 1
  assert traced == (2 if config.stage2.num_epochs else 1)


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_trains_on_a_stand_in_of_its_data(name, stand_ins, tmp_path):
  config = small_run(recipe_on_stand_in(name, stand_ins))
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(results['accuracy']), name
  if config.stage2.num_epochs:
    assert os.path.exists(os.path.join(str(tmp_path), 'stage2', 'config.json'))
  else:
    assert int(state.step) == 2
  if config.posthoc.method != 'none':
    assert results['posthoc']['method'] == config.posthoc.method
