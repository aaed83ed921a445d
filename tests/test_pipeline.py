"""Data: IDX reading, long-tail profiles, subsampling and deterministic batching."""

import gzip

from absl import flags
import numpy as np
import pytest

from configs import base
from conftest import requires_fashion_mnist
from conftest import synthetic_data_config
from ltjax import data
from ltjax.data import augment
from ltjax.data import idx
from ltjax.data import samplers


def write_idx(path, array, type_code=0x08):
  header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, '>u4').tobytes()
  payload = header + array.astype(array.dtype.newbyteorder('>')).tobytes()
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'wb') as f:
    f.write(payload)


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_read_idx_round_trip(tmp_path, suffix):
  images = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
  path = str(tmp_path / f'x-idx3-ubyte{suffix}')
  write_idx(path, images)
  np.testing.assert_array_equal(idx.read_idx(path), images)
  values = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
  write_idx(str(tmp_path / 'v.idx'), values, type_code=0x0C)
  np.testing.assert_array_equal(idx.read_idx(str(tmp_path / 'v.idx')), values)


def test_read_idx_rejects_corrupt_files(tmp_path):
  path = str(tmp_path / 'bad')
  write_idx(path, np.zeros((4, 2, 2), np.uint8))
  with open(path, 'rb') as f:
    raw = f.read()
  with open(path, 'wb') as f:
    f.write(raw[:-3])
  with pytest.raises(ValueError, match='truncated or corrupt'):
    idx.read_idx(path)
  with open(path, 'wb') as f:
    f.write(b'\x01\x02\x03\x04rubbish')
  with pytest.raises(ValueError, match='not an IDX file'):
    idx.read_idx(path)


@requires_fashion_mnist
def test_fashion_mnist_from_debian_package():
  train = data.load_split(base.get_config().data, 'train')
  test = data.load_split(base.get_config().data, 'test')
  assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10000, 28, 28, 1)
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)


def test_missing_data_names_the_fix(tmp_path):
  config = base.get_config().data
  config.data_dir = str(tmp_path)
  with pytest.raises(FileNotFoundError, match='apt-get install -y dataset-fashion-mnist'):
    data.load_split(config, 'train')


def test_long_tail_counts_fashion_mnist_default():
  counts = data.long_tail_counts(10, 1000, 100)
  np.testing.assert_array_equal(counts, [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10])
  groups = data.class_groups(counts)
  assert [int(groups[g].sum()) for g in ('many', 'medium', 'few')] == [5, 3, 2]


@pytest.mark.parametrize('num_classes,ratio,profile,total,smallest', [
    (100, 200, 'exp', 9502, 2), (100, 100, 'exp', 10847, 5), (100, 50, 'exp', 12608, 10),
    (100, 10, 'exp', 19573, 50), (10, 200, 'exp', 11203, 25), (10, 100, 'exp', 12406, 50),
    (10, 50, 'exp', 13996, None), (10, 10, 'exp', 20431, None),
    (100, 100, 'step', 25250, 5), (100, 10, 'step', 27500, 50),
    (10, 100, 'step', 25250, 50), (10, 10, 'step', 27500, 500)])
def test_long_tail_counts_match_the_reference_table(num_classes, ratio, profile, total,
                                                    smallest):
  counts = data.long_tail_counts(num_classes, 50000 // num_classes, ratio, profile)
  assert counts.sum() == total
  if smallest is not None:
    assert counts.min() == smallest


def test_long_tail_counts_reject_bad_profiles():
  for ratio in (0.5, 1.0):
    with pytest.raises(ValueError, match='imbalance_ratio must be > 1'):
      data.long_tail_counts(10, 100, ratio)
  with pytest.raises(ValueError, match='no samples'):
    data.long_tail_counts(10, 5, 100)
  with pytest.raises(ValueError, match='Unknown long-tail profile'):
    data.long_tail_counts(10, 100, 10, 'linear')


def test_long_tail_indices_selection_modes():
  labels = np.tile(np.arange(3), 10)  # 10 per class, interleaved.
  counts = np.array([6, 3, 1])
  first = data.long_tail_indices(labels, counts, selection='first')
  # Class 0 sits at 0, 3, 6, ...; class 1 at 1, 4, ...; class 2 at 2, 5, ...
  np.testing.assert_array_equal(first, [0, 1, 2, 3, 4, 6, 7, 9, 12, 15])
  shuffled = data.long_tail_indices(labels, counts, selection='shuffle', seed=1)
  np.testing.assert_array_equal(np.bincount(labels[shuffled]), counts)
  np.testing.assert_array_equal(
      shuffled, data.long_tail_indices(labels, counts, selection='shuffle', seed=1))
  assert not np.array_equal(
      shuffled, data.long_tail_indices(labels, counts, selection='shuffle', seed=2))



def test_load_datasets_long_tail_and_label_check():
  train, val, test, counts, _ = data.load_datasets(synthetic_data_config())
  assert val is None
  np.testing.assert_array_equal(counts, data.long_tail_counts(10, 40, 4.0))
  assert len(train) == counts.sum() and len(test) == 400
  with pytest.raises(ValueError, match=r'labels outside \[0, 3\)'):
    data.datasets.check_labels(np.array([0, 1, 5]), 3, 'toy')


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
  hosts = [data.TrainBatches(train, global_batch_size=16, seed=0, process_index=i,
                             process_count=4) for i in range(4)]
  for step in (0, 7):
    parts = [h.indices(step) for h in hosts]
    np.testing.assert_array_equal(np.concatenate(parts), single.indices(step))


def test_random_crop_flip_matches_explicit_slicing():
  rng_images = np.random.default_rng(0).integers(0, 256, (6, 5, 7, 2), dtype=np.uint8)
  out = augment.random_crop_flip(rng_images, np.random.default_rng(9), padding=2, flip=True)
  # Replay the same random draws by hand.
  rng = np.random.default_rng(9)
  dy, dx = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
  flips = rng.random(6) < 0.5
  padded = np.pad(rng_images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(6):
    expected = padded[i, dy[i]:dy[i] + 5, dx[i]:dx[i] + 7]
    if flips[i]:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(out[i], expected)
  same = augment.random_crop_flip(rng_images, np.random.default_rng(0), padding=0, flip=False)
  np.testing.assert_array_equal(same, rng_images)


def test_eval_batches_pad_and_mask():
  train = data.load_datasets(synthetic_data_config()).train
  batches = list(data.eval_batches(train, global_batch_size=64))
  assert all(b['image'].shape[0] == 64 for b in batches)
  labels = np.concatenate([b['label'][b['mask']] for b in batches])
  np.testing.assert_array_equal(labels, train.labels)


LT_LABELS = np.repeat(np.arange(5), [100, 50, 20, 5, 1])


def test_class_aware_sampler_draws_every_class_equally_often():
  sampler = samplers.ClassAwareSampler(LT_LABELS, seed=0)
  for epoch in range(3):
    indices = sampler.epoch_indices(epoch)
    assert len(indices) == len(LT_LABELS)
    per_class = np.bincount(LT_LABELS[indices], minlength=5)
    assert per_class.max() - per_class.min() <= 1  # 176 visits over 5 classes.
    # Within a class, its cycle visits every member before repeating one.
    head = indices[LT_LABELS[indices] == 0]
    assert len(np.unique(head)) == len(head)
    tail = indices[LT_LABELS[indices] == 4]
    assert set(tail) == {175}
  np.testing.assert_array_equal(sampler.epoch_indices(1),
                                samplers.ClassAwareSampler(LT_LABELS, seed=0).epoch_indices(1))
  assert not np.array_equal(sampler.epoch_indices(1), sampler.epoch_indices(2))


def test_square_root_sampler_frequencies():
  sampler = samplers.PowerSampler(LT_LABELS, seed=0, power=0.5)
  draws = np.concatenate([sampler.epoch_indices(e) for e in range(200)])
  freq = np.bincount(LT_LABELS[draws], minlength=5) / len(draws)
  expected = np.sqrt([100, 50, 20, 5, 1]) / np.sqrt([100, 50, 20, 5, 1]).sum()
  np.testing.assert_allclose(freq, expected, atol=0.01)
  instance = samplers.InstanceSampler(LT_LABELS, seed=0).epoch_indices(0)
  np.testing.assert_array_equal(np.sort(instance), np.arange(len(LT_LABELS)))
  with pytest.raises(ValueError, match="valid: \\('instance'"):
    samplers.build_sampler('balanced', LT_LABELS, seed=0)


@pytest.mark.parametrize('sampler', ['instance', 'class_aware', 'square_root'])
def test_grain_pipeline_yields_the_batches_of_the_steps(sampler):
  train = data.load_datasets(synthetic_data_config()).train
  batches = data.TrainBatches(train, global_batch_size=16, seed=1, sampler=sampler,
                              augment='crop_flip')
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


def test_validation_split_is_held_out_before_the_long_tail():
  splits = data.load_datasets(synthetic_data_config(val_per_class=5))
  np.testing.assert_array_equal(np.bincount(splits.val.labels), [5] * 10)
  # n_max is the largest class after the hold-out: 40 - 5 = 35.
  np.testing.assert_array_equal(splits.train_counts, data.long_tail_counts(10, 35, 4.0))
  source = data.load_split(synthetic_data_config(), 'train')
  val_images = {x.tobytes() for x in splits.val.images}
  assert not any(x.tobytes() in val_images for x in splits.train.images)
  assert len(val_images) == 50 and len(source) == 400
  no_lt = data.load_datasets(synthetic_data_config(imbalance_ratio=0.0))
  np.testing.assert_array_equal(no_lt.train_counts, [40] * 10)


def test_hold_out_first_selection_takes_the_last_samples():
  labels = np.tile(np.arange(2), 6)  # Class 0 at even, class 1 at odd indices.
  keep, held = data.hold_out_indices(labels, 2, selection='first')
  np.testing.assert_array_equal(held, [8, 9, 10, 11])
  np.testing.assert_array_equal(keep, np.arange(8))
  with pytest.raises(ValueError, match='would leave none'):
    data.hold_out_indices(labels, 6)
