"""Recipe configs and the data layer end to end on small stand-ins of the real formats."""

import glob
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

from configs import base
from conftest import REPO
from ltjax import data
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding

RECIPES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if not os.path.basename(p).startswith(('_', 'base', 'common')))


def flat_keys(config):
  return _flatten(config.to_dict())


def _flatten(d, prefix=''):
  keys = set()
  for k, v in d.items():
    keys |= _flatten(v, f'{prefix}{k}.') if isinstance(v, dict) else {prefix + k}
  return keys


@pytest.mark.parametrize('recipe', RECIPES)
def test_recipes_only_override_base_keys(recipe):
  module = __import__(f'configs.{recipe}', fromlist=['get_config'])
  config = module.get_config()
  assert flat_keys(config) == flat_keys(base.get_config()), recipe
  assert module.__doc__ and 'launch/train.py' in module.__doc__  # The run command.
  models.build_model(config.model, 10)  # Names resolve.


def test_config_arguments_are_parsed_and_checked():
  from configs import ce_cifar_lt  # pylint: disable=g-import-not-at-top
  config = ce_cifar_lt.get_config('dataset=cifar10,ir=50,profile=step')
  assert (config.data.tfds_name, config.data.imbalance_ratio, config.data.profile) == (
      'cifar10', 50.0, 'step')
  with pytest.raises(ValueError, match="Unknown config argument 'imb'"):
    ce_cifar_lt.get_config('imb=10')


def test_cifar_lt_recipe_on_a_tfds_stand_in(tmp_path):
  from configs import ce_cifar_lt  # pylint: disable=g-import-not-at-top
  tfds_source = pytest.importorskip('ltjax.data.tfds_source')
  rng = np.random.default_rng(0)
  make = lambda n: (rng.integers(0, 256, (10 * n, 32, 32, 3), dtype=np.uint8),
                    np.repeat(np.arange(10), n))
  tfds_source.prepare_from_arrays('cifar10', str(tmp_path / 'tfds'),
                                  {'train': make(50), 'test': make(8)})
  config = ce_cifar_lt.get_config('dataset=cifar10,ir=10')
  config.data.data_dir = str(tmp_path / 'tfds')
  config.model.name = 'small_cnn'
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 80, 3
  config.progress_bar = False
  state, results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  # n_max defaults to the source's per-class count (50): counts 50 ... 5.
  counts = data.long_tail_counts(10, 50, 10)
  assert len(results['per_class_accuracy']) == 10 and int(state.step) == 3
  assert data.load_datasets(config.data).train_counts.tolist() == counts.tolist()


def write_list_folder(root, num_classes, per_split, rng):
  """A Places-LT-shaped folder: list files over a few real JPEGs (paths may repeat)."""
  os.makedirs(os.path.join(root, 'images'))
  files = []
  for i in range(12):
    path = f'images/img_{i}.jpg'
    size = (20 + 3 * i, 16 + 2 * i)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
        os.path.join(root, path), quality=90)
    files.append(path)
  layout = data.listfile.SPLITS['places_lt']
  for split, name in layout.files.items():
    labels = np.concatenate([np.arange(num_classes)] * per_split[split])
    with open(os.path.join(root, name), 'w') as f:
      for j, label in enumerate(labels):
        f.write(f'{files[j % len(files)]} {label}\n')


def test_list_file_recipe_end_to_end(tmp_path):
  from configs import ce_places_lt  # pylint: disable=g-import-not-at-top
  write_list_folder(str(tmp_path / 'places'), 365, {'train': 2, 'val': 1, 'test': 1},
                    np.random.default_rng(0))
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
  batches = data.TrainBatches(data.load_split(config.data, 'train'), global_batch_size=8,
                              seed=0, augment='imagenet', image_size=32)
  batch = batches.batch(0)
  assert batch['image'].shape == (8, 32, 32, 3) and batch['image'].dtype == np.float32
  np.testing.assert_array_equal(batch['image'], batches.batch(0)['image'])


def test_variable_size_images_need_a_resized_crop(tmp_path):
  write_list_folder(str(tmp_path), 365, {'train': 1, 'val': 1, 'test': 1},
                    np.random.default_rng(0))
  source = data.listfile.load_list_split('places_lt', 'train', root=str(tmp_path))
  batches = data.TrainBatches(source, global_batch_size=8, seed=0, augment='flip')
  with pytest.raises(ValueError, match="data.augment='imagenet'"):
    batches.batch(0)


def synthetic_rgb(**overrides):
  config = base.get_config().data
  config.name = 'synthetic'
  config.synthetic.image_shape = (32, 32, 3)
  config.synthetic.per_class = 20
  config.imbalance_ratio = 0.0
  config.update(overrides)
  return data.load_datasets(config).train


def test_autoaugment_and_mixup_batches():
  dataset = synthetic_rgb()
  batches = data.TrainBatches(dataset, global_batch_size=16, seed=0, augment='autoaugment',
                              mixup_alpha=1.0)
  batch = batches.batch(3)
  assert set(batch) == {'image', 'label', 'mixup_label', 'mixup_lambda'}
  lam = batch['mixup_lambda'][0]
  assert 0 < lam < 1 and np.all(batch['mixup_lambda'] == lam)
  np.testing.assert_array_equal(np.sort(batch['mixup_label']), np.sort(batch['label']))
  again = batches.batch(3)
  np.testing.assert_array_equal(batch['image'], again['image'])
  # Without augmentation, the mixed image is lam * x + (1 - lam) * x[perm].
  plain = data.TrainBatches(dataset, global_batch_size=16, seed=0, mixup_alpha=0.4)
  mixed = plain.batch(0)
  clean = data.TrainBatches(dataset, global_batch_size=16, seed=0).batch(0)['image']
  lam = mixed['mixup_lambda'][0]
  residual = (mixed['image'] - lam * clean) / (1 - lam)
  # Every residual row is one of the clean images (the partner).
  for row in residual:
    assert min(np.abs(row - c).max() for c in clean) < 1e-3


def test_mixup_loss_is_the_lambda_mixture():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = base.get_config()
  model = models.build_model(config.model, 10)
  tx = optim.torch_sgd(0.0, momentum=0.0)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  loss_fn = lambda z, y: losses.softmax_cross_entropy(z, y, reduction='mean')
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
           'label': rng.integers(0, 10, 8).astype(np.int32),
           'mixup_label': rng.integers(0, 10, 8).astype(np.int32),
           'mixup_lambda': np.full(8, 0.3, np.float32)}
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  (logits, _), _ = state.apply_fn(variables, batch['image'], train=True,
                                  mutable=['batch_stats'])
  expected = 0.3 * loss_fn(logits, batch['label']) + 0.7 * loss_fn(logits, batch['mixup_label'])
  step = train.make_train_step(state, mesh, objective=losses.build_objective(
      config.loss, np.ones(10), steps_per_epoch=10, num_epochs=1))
  _, metrics = step(state, sharding.to_global(batch, mesh))
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)


def test_corrupt_image_fails_naming_it_or_is_skipped_and_reported(tmp_path):
  from configs import ce_places_lt  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / 'places')
  write_list_folder(root, 365, {'train': 1, 'val': 1, 'test': 1}, np.random.default_rng(0))
  with open(os.path.join(root, 'images/img_3.jpg'), 'r+b') as f:
    f.truncate(40)
  config = ce_places_lt.get_config()
  config.data.data_dir = root
  config.data.image_size = config.eval.image_size = 16
  config.model.name, config.dtype, config.progress_bar = 'small_cnn', 'float32', False
  config.data.num_workers = 0
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 128, 1
  with pytest.raises(OSError, match='img_3.jpg.*skip_corrupt'):
    train.train_and_evaluate(config, str(tmp_path / 'strict'))
  config.data.skip_corrupt = True
  train.train_and_evaluate(config, str(tmp_path / 'lenient'))
  logs = glob.glob(str(tmp_path / 'lenient' / 'skipped_images' / 'skipped-*.txt'))
  assert logs and 'img_3.jpg' in open(logs[0]).read()
