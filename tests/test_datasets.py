"""Tests for ltjax.data.datasets: sources, long-tailed splits, hold-outs and open classes."""

import os
import pickle

import numpy as np
from PIL import Image
import pytest

from configs import base
from helpers import requires_fashion_mnist
from helpers import requires_tfds
from helpers import synthetic_data_config
from ltjax import data
from ltjax.data import datasets
from ltjax.data import listfile

OPEN = (3, 7)
CLOSED = np.array([0, 1, 2, 4, 5, 6, 8, 9])


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


def test_load_datasets_long_tail_and_label_check():
  train, val, test, counts, _ = data.load_datasets(synthetic_data_config())
  assert val is None
  np.testing.assert_array_equal(counts, data.long_tail_counts(10, 40, 4.0))
  assert len(train) == counts.sum() and len(test) == 400
  with pytest.raises(ValueError, match=r'labels outside \[0, 3\)'):
    data.datasets.check_labels(np.array([0, 1, 5]), 3, 'toy')


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
  # More images than a class has: the message names the keys and what the source holds.
  with pytest.raises(
      ValueError,
      match=r'(?s)config.data.n_max=50 .*35 to 35 images per class after '
      r'config.data.val_per_class=5: lower config.data.n_max',
  ):
    data.load_datasets(synthetic_data_config(val_per_class=5, n_max=50))


# ----------------------------------------------------------------------------- open classes


def expected_train_indices(config, source_labels):
  """Indices into the unfiltered train source of the open-set train split, by hand."""
  closed_idx = np.flatnonzero(np.isin(source_labels, CLOSED))
  relabelled = np.searchsorted(CLOSED, source_labels[closed_idx])
  n_max = int(np.bincount(relabelled).max())
  counts = data.long_tail_counts(len(CLOSED), n_max, config.imbalance_ratio)
  keep = data.long_tail_indices(
      relabelled, counts, selection=config.selection, seed=config.subsample_seed
  )
  return closed_idx[keep], counts


def check_open_set_splits(config, splits):
  """Every property of an open-set split of a 10-class in-memory source."""
  source_train = data.load_split(config, 'train')
  source_test = data.load_split(config, 'test')
  names = tuple(source_train.class_names[c] for c in CLOSED)
  train_set, test, open_test = splits.train, splits.test, splits.open_test
  for split in (train_set, test):
    assert split.num_classes == 8 and split.class_names == names
    assert set(np.unique(split.labels)) == set(range(8))
  # Train: the closed classes' images, relabelled in order, long-tailed over 8 classes.
  train_idx, counts = expected_train_indices(config, source_train.labels)
  np.testing.assert_array_equal(splits.train_counts, counts)
  np.testing.assert_array_equal(np.bincount(train_set.labels), counts)
  np.testing.assert_array_equal(train_set.images, source_train.images[train_idx])
  np.testing.assert_array_equal(CLOSED[train_set.labels], source_train.labels[train_idx])
  # Test: every closed-class test image, in file order.
  test_idx = np.flatnonzero(np.isin(source_test.labels, CLOSED))
  np.testing.assert_array_equal(test.images, source_test.images[test_idx])
  np.testing.assert_array_equal(CLOSED[test.labels], source_test.labels[test_idx])
  for i in (0, len(test) // 2, len(test) - 1):
    assert test[i]['label'] == int(np.searchsorted(CLOSED, source_test.labels[test_idx[i]]))
  # Open test: exactly the test images of classes 3 and 7, labelled -1.
  open_idx = np.flatnonzero(np.isin(source_test.labels, OPEN))
  assert len(open_test) == len(open_idx) and open_test.num_classes == 8
  assert open_test.class_names == names
  np.testing.assert_array_equal(open_test.labels, -1)
  np.testing.assert_array_equal(open_test.original_labels, source_test.labels[open_idx])
  images, labels = data.pipeline.load_images(open_test, np.arange(len(open_test)))
  np.testing.assert_array_equal(images, source_test.images[open_idx])
  np.testing.assert_array_equal(labels, -1)
  # No open image left in train or test.
  open_images = {x.tobytes() for x in source_test.images[open_idx]}
  open_images |= {x.tobytes() for x in source_train.images[np.isin(source_train.labels, OPEN)]}
  assert not any(x.tobytes() in open_images for x in train_set.images)
  assert not any(x.tobytes() in open_images for x in test.images)


def test_synthetic_open_classes():
  config = synthetic_data_config(open_classes=OPEN)
  splits = data.load_datasets(config)
  check_open_set_splits(config, splits)
  assert splits.val is None
  # In-memory sources stay in memory (the pipeline's fast path).
  assert isinstance(splits.train, data.ArrayDataset)
  assert isinstance(splits.open_test, data.RelabeledSource)
  np.testing.assert_array_equal(splits.train_counts, data.long_tail_counts(8, 40, 4.0))
  # open_test is None without open classes.
  assert data.load_datasets(synthetic_data_config()).open_test is None


def test_open_classes_with_validation_hold_out():
  splits = data.load_datasets(synthetic_data_config(open_classes=OPEN, val_per_class=5))
  np.testing.assert_array_equal(np.bincount(splits.val.labels), [5] * 8)
  assert splits.val.num_classes == 8
  # n_max is the largest closed class after the hold-out: 40 - 5 = 35.
  np.testing.assert_array_equal(splits.train_counts, data.long_tail_counts(8, 35, 4.0))
  assert len(splits.open_test) == 80


@requires_fashion_mnist
def test_fashion_mnist_open_classes():
  config = base.get_config().data
  config.open_classes = OPEN
  splits = data.load_datasets(config)
  check_open_set_splits(config, splits)
  assert splits.train.class_names == (
      't-shirt/top',
      'trouser',
      'pullover',
      'coat',
      'sandal',
      'shirt',
      'bag',
      'ankle boot',
  )
  assert len(splits.open_test) == 2000 and len(splits.test) == 8000
  np.testing.assert_array_equal(splits.train_counts, data.long_tail_counts(8, 6000, 100))
  np.testing.assert_array_equal(
      np.bincount(splits.open_test.original_labels, minlength=10),
      [0, 0, 0, 1000, 0, 0, 0, 1000, 0, 0],
  )


@pytest.mark.parametrize(
    'open_classes,match',
    [
        ((10,), r'ids \[10\] outside the valid range; valid ids are 0\.\.9'),
        ((-1, 2), r'ids \[-1\] outside the valid range; valid ids are 0\.\.9'),
        ((3, 3), r'lists \[3\] more than once'),
        (tuple(range(9)), r'leaving 1 closed; at least 2 must remain'),
        (tuple(range(10)), r'leaving 0 closed; at least 2 must remain'),
        ((1.5,), r'must hold integer class ids'),
        (('3',), r'must hold integer class ids'),
    ],
)
def test_invalid_open_classes_raise(open_classes, match):
  with pytest.raises(ValueError, match=r'config\.data\.open_classes') as error:
    data.load_datasets(synthetic_data_config(open_classes=open_classes))
  assert error.match(match)
  assert 'synthetic' in str(error.value)


def test_open_class_map():
  np.testing.assert_array_equal(data.open_class_map((3, 7), 10), [0, 1, 2, -1, 3, 4, 5, -1, 6, 7])
  np.testing.assert_array_equal(data.open_class_map((np.int64(0),), 3), [-1, 0, 1])
  with pytest.raises(ValueError, match='must be a tuple of class ids'):
    data.open_class_map(3, 10)


def test_relabelled_sources_and_splits_pickle():
  splits = data.load_datasets(synthetic_data_config(open_classes=OPEN))
  again = pickle.loads(pickle.dumps(splits))
  assert isinstance(again, data.Splits) and len(again) == 5
  np.testing.assert_array_equal(again.open_test.labels, splits.open_test.labels)
  np.testing.assert_array_equal(again.open_test.original_labels, splits.open_test.original_labels)
  for i in (0, 41, len(splits.open_test) - 1):
    np.testing.assert_array_equal(again.open_test[i]['image'], splits.open_test[i]['image'])
    assert again.open_test[i]['label'] == -1
  replaced = splits._replace(val=splits.test)  # pylint: disable=protected-access
  assert replaced.open_test is splits.open_test and replaced.val is splits.test
  assert data.Splits(*splits[:4]).open_test is None  # open_test is optional.


def write_png_list_folder(root, counts):
  """A list-file folder: PNG images (lossless) and a train/test list over len(counts) classes."""
  rng = np.random.default_rng(0)
  images, lines = {}, {'train': [], 'test': []}
  for c, n in enumerate(counts):
    os.makedirs(root / f'c{c}')
    for j in range(n):
      relpath = f'c{c}/{j}.png'
      images[relpath] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
      Image.fromarray(images[relpath]).save(root / relpath)
      lines['test' if j < 2 else 'train'].append(f'{relpath} {c}')
  for split, split_lines in lines.items():
    (root / f'{split}.txt').write_text('\n'.join(split_lines) + '\n')
  return images, lines


def test_list_file_source_open_classes(tmp_path, monkeypatch):
  """A decoding source: relabelled by a RelabeledSource, through load_datasets and batching."""
  counts = (12, 10, 9, 8, 7)
  images, lines = write_png_list_folder(tmp_path, counts)
  sources = {
      split: listfile.ListFileSource(
          tmp_path,
          tmp_path / f'{split}.txt',
          num_classes=5,
          mean=(0.5,) * 3,
          std=(0.25,) * 3,
          skip_log_dir=tmp_path / 'skips',
      )
      for split in ('train', 'test')
  }
  monkeypatch.setattr(
      datasets, 'load_split', lambda config, split, skip_log_dir=None: sources[split]
  )
  config = synthetic_data_config(open_classes=(1,), imbalance_ratio=0.0)
  splits = data.load_datasets(config)
  closed = np.array([0, 2, 3, 4])
  assert isinstance(splits.train, data.RelabeledSource)
  assert splits.train.num_classes == 4 and splits.train.class_names == ('c0', 'c2', 'c3', 'c4')
  np.testing.assert_array_equal(splits.train_counts, [10, 7, 6, 5])
  assert len(splits.open_test) == 2 and len(splits.test) == 8
  np.testing.assert_array_equal(splits.open_test.original_labels, [1, 1])
  for split, name in ((splits.train, 'train'), (splits.test, 'test'), (splits.open_test, 'test')):
    kept = [
        line
        for line in lines[name]
        if (int(line.split()[1]) in closed) == (split is not splits.open_test)
    ]
    assert len(split) == len(kept)
    for i in range(len(split)):
      relpath, label = kept[i].split()
      record = split[i]
      np.testing.assert_array_equal(record['image'], images[relpath])
      expected = -1 if split is splits.open_test else int(np.searchsorted(closed, int(label)))
      assert record['label'] == split.labels[i] == expected
  # subset, pickling (grain workers), skipped() and the training/eval pipeline.
  sub = pickle.loads(pickle.dumps(splits.train.subset(np.array([5, 0]))))
  assert isinstance(sub, data.RelabeledSource) and sub.class_names == splits.train.class_names
  np.testing.assert_array_equal(sub[0]['image'], splits.train[5]['image'])
  assert sub.skipped() == set() and splits.open_test.skipped() == set()
  batches = data.TrainBatches(splits.train, global_batch_size=8, seed=0, augment='flip')
  assert batches.image_shape() == (8, 8, 3)
  got = list(batches.iterate(0, 2, num_threads=1))
  assert got[0]['image'].shape == (8, 8, 8, 3) and set(got[1]['label']) <= set(range(4))
  evals = list(data.eval_batches(splits.open_test, global_batch_size=4))
  assert len(evals) == 1 and evals[0]['mask'].sum() == 2
  np.testing.assert_array_equal(evals[0]['label'][evals[0]['mask']], [-1, -1])


def test_relabel_composes_instead_of_nesting():
  source = data.load_split(synthetic_data_config(), 'test')
  names = tuple(f'class_{c}' for c in CLOSED)
  closed = source.subset(np.flatnonzero(np.isin(source.labels, CLOSED)))
  first = data.relabel(closed, data.open_class_map((3, 7), 10), names)
  assert isinstance(first, data.ArrayDataset)  # All labels known: stays in memory.
  # Unknown (-1) labels are outside ArrayDataset's [0, C): wrapped instead.
  assert isinstance(
      data.relabel(source, data.open_class_map((3, 7), 10), names), data.RelabeledSource
  )
  wrapped = data.RelabeledSource(
      source, data.open_class_map((3, 7), 10), num_classes=8, class_names=first.class_names
  )
  twice = data.relabel(wrapped, data.open_class_map((0,), 8), first.class_names[1:])
  assert isinstance(twice.source, data.ArrayDataset)
  np.testing.assert_array_equal(twice.mapping, [-1, 0, 1, -1, 2, 3, 4, -1, 5, 6])
  np.testing.assert_array_equal(twice.labels, twice.mapping[source.labels])


@requires_tfds
def test_tfds_source_open_classes(tmp_path):
  """TFDS records carry their original label; the wrapper maps it."""
  rng = np.random.default_rng(0)
  train_arrays = (rng.integers(0, 256, (40, 4, 4, 3), dtype=np.uint8), np.arange(40) % 4)
  test_arrays = (rng.integers(0, 256, (12, 4, 4, 3), dtype=np.uint8), np.arange(12) % 4)
  names = ('cat', 'dog', 'emu', 'fox')
  data.tfds_source.prepare_from_arrays(
      'tiny_open', str(tmp_path), {'train': train_arrays, 'test': test_arrays}, class_names=names
  )
  config = synthetic_data_config(
      name='tfds',
      tfds_name='tiny_open',
      data_dir=str(tmp_path),
      imbalance_ratio=0.0,
      open_classes=(2,),
  )
  splits = data.load_datasets(config)
  assert splits.train.class_names == ('cat', 'dog', 'fox')
  np.testing.assert_array_equal(splits.train_counts, [10, 10, 10])
  test = pickle.loads(pickle.dumps(splits.test))
  test_idx = np.flatnonzero(test_arrays[1] != 2)
  for i, j in enumerate(test_idx):
    np.testing.assert_array_equal(test[i]['image'], test_arrays[0][j])
    assert test[i]['label'] == [0, 1, -1, 2][test_arrays[1][j]]
  open_idx = np.flatnonzero(test_arrays[1] == 2)
  images, labels = data.pipeline.load_images(splits.open_test, np.arange(3))
  np.testing.assert_array_equal(images, test_arrays[0][open_idx])
  np.testing.assert_array_equal(labels, -1)
