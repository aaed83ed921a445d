"""Large-data sources: list-file image folders and TFDS (ArrayRecord) without TensorFlow."""

import importlib.abc
import importlib.util
import io
import multiprocessing
import operator
import os
import pickle
import sys
import time

import numpy as np
from PIL import Image
import pytest

from ltjax.data import listfile
from ltjax.data import tfds_source

requires_tfds = pytest.mark.skipif(
    importlib.util.find_spec('tensorflow_datasets') is None,
    reason='tensorflow-datasets not installed (pip install ltjax[tfds])')



class _HideTensorflow(importlib.abc.MetaPathFinder):
  """Wraps an import finder so that it does not find TensorFlow."""

  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if name == 'tensorflow' or name.startswith('tensorflow.'):
      return None
    return self._finder.find_spec(name, path, target)

  def invalidate_caches(self):
    if hasattr(self._finder, 'invalidate_caches'):
      self._finder.invalidate_caches()


@pytest.fixture
def no_tensorflow(monkeypatch):
  """TensorFlow looks uninstalled during the test, even where it is installed."""
  if 'tensorflow' in sys.modules:
    pytest.skip('TensorFlow was already imported by another test.')
  monkeypatch.setattr(sys, 'meta_path', [_HideTensorflow(f) for f in sys.meta_path])
  yield
  assert 'tensorflow' not in sys.modules


COUNTS = (100, 80, 50, 35, 20, 15)  # 300 images, a long tail over 6 of the 1000 classes.
H, W = 16, 20


def smooth_image(i: int) -> np.ndarray:
  """A (H, W, 3) image JPEG keeps within a few levels: a colour plus gentle ramps."""
  rng = np.random.default_rng(i)
  colour = rng.integers(40, 200, 3)
  ramp = np.add.outer(np.arange(H) * 2, np.arange(W))[..., None]
  return (colour + ramp).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def imagenet_lt(tmp_path_factory):
  """An ImageNet-LT-style folder: train/<wnid>/<file>.JPEG plus the three split files."""
  root = tmp_path_factory.mktemp('imagenet_lt')
  lines, images = {'train': [], 'val': [], 'test': []}, {}
  for c, n in enumerate(COUNTS):
    os.makedirs(root / 'train' / f'n0000{c}')
    for j in range(n):
      relpath = f'train/n0000{c}/n0000{c}_{j}.JPEG'
      images[relpath] = smooth_image(len(images))
      Image.fromarray(images[relpath]).save(root / relpath, format='JPEG', quality=95)
      split = 'train' if j >= 4 else ('val' if j < 2 else 'test')
      lines[split].append(f'{relpath} {c}')
  for split, split_lines in lines.items():
    # Trailing whitespace and blank lines are tolerated.
    (root / f'ImageNet_LT_{split}.txt').write_text('\n'.join(split_lines) + '  \n\n')
  return root, lines, images


def test_list_file_source_end_to_end(imagenet_lt, caplog):
  root, lines, images = imagenet_lt
  source = listfile.load_list_split('imagenet_lt', 'train', root=str(root))
  assert 'published imagenet_lt train split has 115846' in caplog.text  # A warning only.
  assert len(source) == len(lines['train']) == 300 - 4 * len(COUNTS)
  expected_labels = [int(line.split()[1]) for line in lines['train']]
  np.testing.assert_array_equal(source.labels, expected_labels)
  assert source.labels.dtype == np.int32
  assert source.num_classes == 1000
  assert source.mean == listfile.IMAGENET_MEAN and source.std == listfile.IMAGENET_STD
  assert source.class_names[:6] == tuple(f'n0000{c}' for c in range(6))
  assert source.class_names[6] == 'class_6'  # No image, no folder name.
  for i in (0, 17, len(source) - 1):
    record = source[i]
    relpath = lines['train'][i].split()[0]
    assert record['image'].shape == (H, W, 3) and record['image'].dtype == np.uint8
    assert record['label'] == expected_labels[i]
    # JPEG is lossy: smooth images come back within a few levels.
    error = np.abs(record['image'].astype(int) - images[relpath].astype(int))
    assert error.mean() < 2 and error.max() < 12


def test_list_file_subset_and_pickle(imagenet_lt):
  root, lines, _ = imagenet_lt
  source = listfile.load_list_split('imagenet_lt', 'test', root=str(root))
  assert len(source) == 2 * len(COUNTS)
  indices = np.array([7, 0, 11, 3])
  sub = source.subset(indices)
  assert isinstance(sub, listfile.ListFileSource) and len(sub) == 4
  np.testing.assert_array_equal(sub.labels, source.labels[indices])
  assert sub.path(0) == os.path.join(str(root), lines['test'][7].split()[0])
  twice = pickle.loads(pickle.dumps(sub.subset([2, 0])))
  assert twice.class_names == source.class_names and twice.num_classes == 1000
  for i, j in enumerate([11, 7]):
    np.testing.assert_array_equal(twice[i]['image'], source[j]['image'])
    assert twice[i]['label'] == source[j]['label']


def test_list_file_png_exact_grayscale_to_rgb(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a b.png')  # A space in the path is fine.
  Image.fromarray(gray).save(tmp_path / 'g.png')
  (tmp_path / 'list.txt').write_text('a b.png 1\n/g.png\t0\n')  # Leading '/' stays under root.
  source = listfile.ListFileSource(tmp_path, tmp_path / 'list.txt', mean=(0.5,) * 3,
                                   std=(0.25,) * 3)
  assert source.num_classes == 2  # Inferred: max label + 1.
  np.testing.assert_array_equal(source[0]['image'], rgb)
  np.testing.assert_array_equal(source[1]['image'], np.repeat(gray[..., None], 3, -1))
  assert source[-1]['label'] == 0
  with pytest.raises(IndexError):
    source[2]  # pylint: disable=pointless-statement


def test_list_file_missing_root_and_split_file(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(FileNotFoundError, match=f'image root not found: looked for {missing}.*OLTR'):
    listfile.load_list_split('places_lt', 'train', root=str(missing))
  expected = tmp_path / 'Places_LT_val.txt'
  with pytest.raises(FileNotFoundError, match=f'split file not found: looked for {expected}.*'
                     'Places365'):
    listfile.load_list_split('places_lt', 'val', root=str(tmp_path))
  lists = tmp_path / 'lists'
  with pytest.raises(FileNotFoundError, match=str(lists / 'iNaturalist18_val.txt')):
    listfile.load_list_split('inat2018', 'test', root=str(tmp_path), list_dir=str(lists))
  with pytest.raises(ValueError, match='valid:'):
    listfile.load_list_split('imagenet', 'train', root=str(tmp_path))


def test_list_file_malformed_line_and_label_range(tmp_path):
  lists = tmp_path / 'lists'
  lists.mkdir()
  bad = lists / 'Places_LT_train.txt'
  bad.write_text('a/x.jpg 0\n\na/y.jpg\n')
  with pytest.raises(ValueError, match=f'{bad}, line 3: expected'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))
  bad.write_text('a/x.jpg 0\na/y.jpg one\n')
  with pytest.raises(ValueError, match='line 2'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))
  bad.write_text('a/x.jpg 0\na/y.jpg 365\n')
  with pytest.raises(ValueError, match=f'{bad}: 1 labels outside \\[0, 365\\).*a/y.jpg'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))


@pytest.fixture
def with_corrupt(tmp_path):
  """Five PNGs listed in order; #1 truncated, #2 not an image, #4 missing."""
  images = [np.full((3, 4, 3), 10 * i, np.uint8) for i in range(5)]
  for i, image in enumerate(images):
    Image.fromarray(image).save(tmp_path / f'{i}.jpg', format='JPEG')
  raw = (tmp_path / '1.jpg').read_bytes()
  (tmp_path / '1.jpg').write_bytes(raw[:int(len(raw) * 0.6)])
  (tmp_path / '2.jpg').write_bytes(b'not an image')
  os.remove(tmp_path / '4.jpg')
  (tmp_path / 'list.txt').write_text(''.join(f'{i}.jpg {i}\n' for i in range(5)))
  return tmp_path


def test_corrupt_image_raises_naming_the_file(with_corrupt):
  source = listfile.ListFileSource(with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3,
                                   std=(0.25,) * 3)
  assert source[0]['label'] == 0
  for i in (1, 2, 4):
    with pytest.raises(listfile.UnreadableImageError,
                       match=f'{with_corrupt / f"{i}.jpg"}.*skip_corrupt=True'):
      source[i]  # pylint: disable=pointless-statement


def test_skip_corrupt_returns_next_readable_and_records(with_corrupt, tmp_path_factory):
  log_dir = tmp_path_factory.mktemp('skips')
  source = listfile.ListFileSource(with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3,
                                   std=(0.25,) * 3, skip_corrupt=True, skip_log_dir=log_dir)
  assert len(source) == 5  # Labels stay those of the list file.
  record = source[1]  # 1 and 2 unreadable: the next readable one is 3.
  assert record['label'] == 3 and int(record['image'].mean()) == 30
  assert source.skipped() == {str(with_corrupt / '1.jpg'), str(with_corrupt / '2.jpg')}
  assert source[4]['label'] == 0  # Wraps around at the end.
  # A worker process: the source is pickled into it and its skips reach the log dir.
  fresh = listfile.ListFileSource(with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3,
                                  std=(0.25,) * 3, skip_corrupt=True,
                                  skip_log_dir=tmp_path_factory.mktemp('worker_skips'))
  with multiprocessing.get_context('spawn').Pool(1) as pool:
    assert pool.apply(operator.getitem, (fresh, 2))['label'] == 3
  assert fresh._skipped == set()  # pylint: disable=protected-access
  assert fresh.skipped() == {str(with_corrupt / '2.jpg')}
  # Without a log dir only this process's skips are known.
  local = listfile.ListFileSource(with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3,
                                  std=(0.25,) * 3, skip_corrupt=True)
  assert local[4]['label'] == 0 and local.skipped() == {str(with_corrupt / '4.jpg')}
  assert pickle.loads(pickle.dumps(local)).skipped() == set()


def test_tfds_import_error_names_the_extra(monkeypatch):
  monkeypatch.setitem(sys.modules, 'tensorflow_datasets', None)
  with pytest.raises(ImportError, match=r'pip install ltjax\[tfds\]'):
    tfds_source._tfds()  # pylint: disable=protected-access


@requires_tfds
def test_tfds_prepare_and_read_without_tensorflow(tmp_path, no_tensorflow):
  del no_tensorflow
  rng = np.random.default_rng(0)
  train = (rng.integers(0, 256, (40, 6, 5, 3), dtype=np.uint8), rng.integers(0, 4, 40))
  test = (rng.integers(0, 256, (12, 6, 5, 3), dtype=np.uint8), np.arange(12) % 4)
  names = ('cat', 'dog', 'emu', 'fox')
  builder_dir = tfds_source.prepare_from_arrays('tiny_lt', str(tmp_path),
                                                {'train': train, 'test': test},
                                                class_names=names)
  assert builder_dir == str(tmp_path / 'tiny_lt' / '1.0.0')
  assert sorted(os.listdir(tmp_path)) == ['tiny_lt']  # No downloads/ left behind.
  with pytest.raises(FileExistsError, match='overwrite=True'):
    tfds_source.prepare_from_arrays('tiny_lt', str(tmp_path), {'train': train})
  for split, (images, labels) in (('train', train), ('test', test)):
    source = tfds_source.load_tfds_split('tiny_lt', split, data_dir=str(tmp_path))
    assert len(source) == len(labels) and source.labels.dtype == np.int32
    np.testing.assert_array_equal(source.labels, labels)
    assert source.num_classes == 4 and source.class_names == names
    for i in range(len(labels)):
      np.testing.assert_array_equal(source[i]['image'], images[i])
      assert source[i]['label'] == labels[i]
  # Normalisation computed from the train arrays and stored with the data set.
  pixels = train[0].reshape(-1, 3) / 255.0
  np.testing.assert_allclose(source.mean, pixels.mean(0), rtol=1e-6)
  np.testing.assert_allclose(source.std, pixels.std(0), rtol=1e-6)
  sub = pickle.loads(pickle.dumps(source.subset(np.array([9, 2, 5]))))
  assert sub._source is None  # pylint: disable=protected-access
  sub = sub.subset([2, 0])
  np.testing.assert_array_equal(sub.labels, test[1][[5, 9]])
  np.testing.assert_array_equal(sub[0]['image'], test[0][5])
  sliced = tfds_source.load_tfds_split('tiny_lt:1.0.0', 'train[:10]', data_dir=str(tmp_path))
  np.testing.assert_array_equal(sliced.labels, train[1][:10])
  # Overwriting replaces the data and the labels cached in this process.
  tfds_source.prepare_from_arrays('tiny_lt', str(tmp_path), {'test': (test[0], 3 - test[1])},
                                  class_names=names, overwrite=True)
  source = tfds_source.load_tfds_split('tiny_lt', 'test', data_dir=str(tmp_path))
  np.testing.assert_array_equal(source.labels, 3 - test[1])
  assert 'tensorflow' not in sys.modules


@requires_tfds
def test_tfds_stock_format_png_images(tmp_path, monkeypatch, no_tensorflow):
  """The layout `tfds build cifar10` writes: PNG-encoded Image, ClassLabel, Text id."""
  del no_tensorflow
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def encode_png(self, image):  # Image.encode_example needs TensorFlow; Pillow stands in.
    del self
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image).squeeze(-1)).save(buffer, format='PNG')
    return buffer.getvalue()

  images = np.random.default_rng(1).integers(0, 256, (9, 7, 7, 1), dtype=np.uint8)

  class StockLike(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('3.0.2')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                   features=tfds.features.FeaturesDict({
                                       'id': tfds.features.Text(),
                                       'image': tfds.features.Image(shape=(7, 7, 1)),
                                       'label': tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i, image in enumerate(images):
        yield i, {'id': f'img{i}', 'image': image, 'label': i % 3}

  with monkeypatch.context() as patch:
    patch.setattr(tfds.features.Image, 'encode_example', encode_png)
    builder = StockLike(data_dir=str(tmp_path), file_format='array_record')
    builder.download_and_prepare(  # Generates from the arrays above: no network.
        download_dir=str(tmp_path / 'downloads'))
  with pytest.raises(ValueError, match='No normalisation known.*pass mean= and std='):
    tfds_source.load_tfds_split('stock_like', 'train', data_dir=str(tmp_path))
  source = tfds_source.load_tfds_split('stock_like', 'train', data_dir=str(tmp_path),
                                       mean=(0.5,), std=(0.25,))
  np.testing.assert_array_equal(source.labels, np.arange(9) % 3)
  assert source[4]['image'].shape == (7, 7, 1)  # Grayscale keeps its one channel.
  np.testing.assert_array_equal(source[4]['image'], images[4])
  with pytest.raises(ValueError, match="no feature 'img'.*image_key"):
    tfds_source.load_tfds_split('stock_like', 'train', data_dir=str(tmp_path), mean=(0.5,),
                                std=(0.25,), image_key='img')


def test_tfds_missing_data_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=f'{tmp_path / "cifar10"} does not exist.*'
                     'tfds build cifar10'):
    tfds_source.load_tfds_split('cifar10', 'train', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='data_dir .*nowhere does not exist'):
    tfds_source.load_tfds_split('mnist', 'test', data_dir=str(tmp_path / 'nowhere'))
  # A TFRecord-only preparation cannot be read randomly.
  (tmp_path / 'mnist' / '3.0.1').mkdir(parents=True)
  (tmp_path / 'mnist' / '3.0.1' / 'dataset_info.json').write_text('{}')
  (tmp_path / 'mnist' / '3.0.1' / 'mnist-test.tfrecord-00000-of-00001').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match='TFRecord files.*--file_format=array_record'):
    tfds_source.load_tfds_split('mnist', 'test', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='mnist/9.9.9/dataset_info.json does not exist'):
    tfds_source.load_tfds_split('mnist:9.9.9', 'test', data_dir=str(tmp_path))
  (tmp_path / 'imagenet2012_subset' / '1pct').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='configs.*imagenet2012_subset/1pct'):
    tfds_source.load_tfds_split('imagenet2012_subset', 'train', data_dir=str(tmp_path))
  assert time.monotonic() - start < 5  # Never the minutes of TFDS's network retries.
