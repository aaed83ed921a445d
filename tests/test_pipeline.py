"""Tests for ltjax.data.pipeline: deterministic train batches, grain, eval batches, mixup."""

from absl import flags
import numpy as np
import pytest

from configs import base
from helpers import synthetic_data_config
from helpers import write_places_folder
from ltjax import data


def test_train_batches_are_a_function_of_the_step():
  train = data.load_datasets(synthetic_data_config(augment='crop_flip')).train
  make = lambda: data.TrainBatches(train, global_batch_size=16, seed=3, augment='crop_flip')
  a, b = make(), make()
  for step in (0, 5, a.steps_per_epoch + 2):
    np.testing.assert_array_equal(a.batch(step)['image'], b.batch(step)['image'])
    np.testing.assert_array_equal(a.batch(step)['label'], b.batch(step)['label'])
  # One epoch visits distinct samples; the next epoch is another permutation.
  epoch0 = np.concatenate([a.indices(s) for s in range(a.steps_per_epoch)])
  assert len(np.unique(epoch0)) == len(epoch0) == a.steps_per_epoch * 16
  assert not np.array_equal(a.indices(0), a.indices(a.steps_per_epoch))


def test_per_host_shards_are_disjoint_and_cover_the_global_batch():
  train = data.load_datasets(synthetic_data_config()).train
  single = data.TrainBatches(train, global_batch_size=16, seed=0)
  hosts = [
      data.TrainBatches(train, global_batch_size=16, seed=0, process_index=i, process_count=4)
      for i in range(4)
  ]
  for step in (0, 7):
    parts = [h.indices(step) for h in hosts]
    np.testing.assert_array_equal(np.concatenate(parts), single.indices(step))


def test_eval_batches_pad_and_mask():
  train = data.load_datasets(synthetic_data_config()).train
  batches = list(data.eval_batches(train, global_batch_size=64))
  assert all(b['image'].shape[0] == 64 for b in batches)
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(labels, train.labels)


@pytest.mark.parametrize('sampler', ['instance', 'class_aware', 'square_root'])
def test_grain_pipeline_yields_the_batches_of_the_steps(sampler):
  train = data.load_datasets(synthetic_data_config()).train
  batches = data.TrainBatches(
      train, global_batch_size=16, seed=1, sampler=sampler, augment='crop_flip'
  )
  expected = [batches.batch(step) for step in range(5, 25)]
  for num_threads in (0, 1):
    got = list(batches.iterate(5, 20, num_threads=num_threads))
    assert len(got) == 20
    for a, b in zip(got, expected):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])


def test_grain_worker_processes_give_the_same_batches():
  flags.FLAGS.mark_as_parsed()  # As launch/train.py's absl app does.
  train = data.load_datasets(synthetic_data_config()).train
  batches = data.TrainBatches(train, global_batch_size=16, seed=1, augment='crop_flip')
  got = list(batches.iterate(3, 4, num_workers=1))
  for step, batch in zip(range(3, 7), got):
    np.testing.assert_array_equal(batch['image'], batches.batch(step)['image'])


def test_variable_size_images_need_a_resized_crop(tmp_path):
  write_places_folder(
      str(tmp_path), 365, {'train': 1, 'val': 1, 'test': 1}, np.random.default_rng(0)
  )
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
  batches = data.TrainBatches(
      dataset, global_batch_size=16, seed=0, augment='autoaugment', mixup_alpha=1.0
  )
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
