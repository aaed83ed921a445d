"""Tests for ltjax.data.tfds_source: TFDS ArrayRecord data sets read without TensorFlow."""

import importlib.abc
import io
import os
import pickle
import sys
import time

import numpy as np
from PIL import Image
import pytest

from helpers import requires_tfds
from ltjax.data import tfds_source


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
  builder_dir = tfds_source.prepare_from_arrays(
      'tiny_lt', str(tmp_path), {'train': train, 'test': test}, class_names=names
  )
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
  tfds_source.prepare_from_arrays(
      'tiny_lt', str(tmp_path), {'test': (test[0], 3 - test[1])}, class_names=names, overwrite=True
  )
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
      return tfds.core.DatasetInfo(
          builder=self,
          disable_shuffling=True,
          features=tfds.features.FeaturesDict(
              {
                  'id': tfds.features.Text(),
                  'image': tfds.features.Image(shape=(7, 7, 1)),
                  'label': tfds.features.ClassLabel(num_classes=3),
              }
          ),
      )

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples()}

    def _generate_examples(self):
      for i, image in enumerate(images):
        yield i, {'id': f'img{i}', 'image': image, 'label': i % 3}

  with monkeypatch.context() as patch:
    patch.setattr(tfds.features.Image, 'encode_example', encode_png)
    builder = StockLike(data_dir=str(tmp_path), file_format='array_record')
    builder.download_and_prepare(  # Generates from the arrays above: no network.
        download_dir=str(tmp_path / 'downloads')
    )
  with pytest.raises(ValueError, match='No normalisation known.*pass mean= and std='):
    tfds_source.load_tfds_split('stock_like', 'train', data_dir=str(tmp_path))
  source = tfds_source.load_tfds_split(
      'stock_like', 'train', data_dir=str(tmp_path), mean=(0.5,), std=(0.25,)
  )
  np.testing.assert_array_equal(source.labels, np.arange(9) % 3)
  assert source[4]['image'].shape == (7, 7, 1)  # Grayscale keeps its one channel.
  np.testing.assert_array_equal(source[4]['image'], images[4])
  with pytest.raises(ValueError, match="no feature 'img'.*image_key"):
    tfds_source.load_tfds_split(
        'stock_like', 'train', data_dir=str(tmp_path), mean=(0.5,), std=(0.25,), image_key='img'
    )


def test_tfds_missing_data_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(
      FileNotFoundError, match=f'{tmp_path / "cifar10"} does not exist.*' 'tfds build cifar10'
  ):
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
