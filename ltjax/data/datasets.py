"""Data sources and the long-tailed splits of a run.

Every source is random access with one protocol (``Source``): ``len``,
``source[i] -> {'image': (H, W, C) uint8, 'label': int}``, the label array
``labels`` (read without decoding images), ``num_classes``, ``mean``/``std``,
``class_names`` and ``subset(indices)``. ``config.data.name`` selects one:

  fashion_mnist  IDX files of Debian's ``dataset-fashion-mnist`` package
                 (/usr/share/datasets/fashion-mnist) or of ``data.data_dir``;
                 in memory (``ArrayDataset``).
  synthetic      class-dependent gratings, for tests and benchmarks (in memory).
  tfds           a prepared TFDS data set ``data.tfds_name`` (cifar10,
                 cifar100, mnist, ...) under ``data.data_dir``, read from
                 ArrayRecord without TensorFlow (``ltjax.data.tfds_source``).
  imagenet_lt, places_lt, inat2018
                 list-file image folders: images under ``data.data_dir``, the
                 OLTR/Decoupling split files in ``data.list_dir`` (default: the
                 same directory); JPEGs are decoded in the input workers
                 (``ltjax.data.listfile``).

``load_datasets`` returns the train split (long-tailed by ``data.imbalance_ratio``
unless the source already is), an optional validation split and the test split.
"""

import dataclasses
import os
from typing import NamedTuple, Protocol

import ml_collections
import numpy as np

from ltjax.data import idx
from ltjax.data import listfile
from ltjax.data import longtail
from ltjax.data import tfds_source

FASHION_MNIST_DIRS = ('/usr/share/datasets/fashion-mnist',)
FASHION_MNIST_CLASSES = ('t-shirt/top', 'trouser', 'pullover', 'dress', 'coat',
                         'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot')
_FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_MISSING_FASHION_MNIST = (
    'Fashion-MNIST not found: looked for {files} in {dirs}. Install it with '
    '`sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or download the four '
    'IDX files from https://github.com/zalandoresearch/fashion-mnist and pass their '
    'directory as --config.data.data_dir=/path/to/dir.')


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
  """Images and labels held in host memory.

  Attributes:
    images: (N, H, W, C) uint8.
    labels: (N,) int32 in [0, num_classes).
    num_classes: C.
    mean, std: per-channel normalisation in [0, 1] pixel units.
    class_names: C names.
  """
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, C) uint8, 'label': int} (the source protocol)."""
    return {'image': self.images[index], 'label': int(self.labels[index])}

  def subset(self, indices: np.ndarray) -> 'ArrayDataset':
    return dataclasses.replace(self, images=self.images[indices],
                               labels=self.labels[indices])


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
  """Fails before training if any label is outside [0, num_classes)."""
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(
        f'{name}: {int(bad.sum())} labels outside [0, {num_classes}) '
        f'(e.g. {np.unique(labels[bad])[:5].tolist()}). Fix the label files or set '
        f'config.data.num_classes to the number of classes in the data.')


def _find_idx_file(dirs: list[str], stem: str) -> str | None:
  for d in dirs:
    for name in (stem + '.gz', stem):
      path = os.path.join(d, name)
      if os.path.exists(path):
        return path
  return None


def load_fashion_mnist(split: str, data_dir: str = '') -> ArrayDataset:
  """Loads a Fashion-MNIST split ('train' or 'test') from IDX files."""
  dirs = [data_dir] if data_dir else list(FASHION_MNIST_DIRS)
  image_stem, label_stem = _FASHION_MNIST_FILES[split]
  paths = [_find_idx_file(dirs, s) for s in (image_stem, label_stem)]
  if None in paths:
    raise FileNotFoundError(_MISSING_FASHION_MNIST.format(
        files=[image_stem + '[.gz]', label_stem + '[.gz]'], dirs=dirs))
  images = idx.read_idx(paths[0])
  labels = idx.read_idx(paths[1]).astype(np.int32)
  if images.ndim != 3 or len(images) != len(labels):
    raise ValueError(f'{paths[0]} and {paths[1]} disagree: images {images.shape}, '
                     f'labels {labels.shape}.')
  check_labels(labels, 10, paths[1])
  return ArrayDataset(images=images[..., None], labels=labels, num_classes=10,
                      mean=(0.2860,), std=(0.3530,),
                      class_names=FASHION_MNIST_CLASSES)


def make_synthetic(split: str, *, num_classes: int, per_class: int,
                   image_shape: tuple[int, int, int], seed: int) -> ArrayDataset:
  """Learnable random data: class c is a grating of its own orientation and frequency.

  Each image is a sinusoidal grating (angle pi * c / C, one of two spatial
  frequencies) with a random phase, plus Gaussian pixel noise, so a
  convolutional network with global pooling can tell the classes apart.
  """
  h, w, channels = image_shape
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  angle = np.pi * labels / num_classes
  frequency = np.where(labels % 2 == 0, 0.15, 0.3)
  phase = rng.uniform(0, 2 * np.pi, len(labels))
  yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
  project = (np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy)
  grating = np.sin(2 * np.pi * frequency[:, None, None] * project + phase[:, None, None])
  images = 128 + 80 * grating[..., None] + rng.normal(0, 40, (len(labels), h, w, channels))
  images = np.clip(images, 0, 255).astype(np.uint8)
  return ArrayDataset(images=images, labels=labels, num_classes=num_classes,
                      mean=(0.5,) * channels, std=(0.25,) * channels,
                      class_names=tuple(f'class_{c}' for c in range(num_classes)))


class Source(Protocol):
  """A random-access data source (see the module docstring)."""
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict:
    ...

  def subset(self, indices: np.ndarray) -> 'Source':
    ...


ARRAY_SOURCES = ('fashion_mnist', 'synthetic')
SOURCES = ARRAY_SOURCES + ('tfds',) + tuple(listfile.SPLITS)


def load_split(data_config: ml_collections.ConfigDict, split: str, *,
               skip_log_dir: str | None = None) -> Source:
  """Split 'train', 'val' or 'test' of the source named by ``data_config.name``.

  ``skip_log_dir``: where list-file sources record images skipped as corrupt
  (with ``data.skip_corrupt``), so skips in worker processes are counted too.
  """
  if data_config.name in listfile.SPLITS:
    return listfile.load_list_split(
        data_config.name, split, root=data_config.data_dir,
        list_dir=data_config.list_dir or None, skip_corrupt=data_config.skip_corrupt,
        skip_log_dir=skip_log_dir)
  if data_config.name == 'tfds':
    return tfds_source.load_tfds_split(data_config.tfds_name, split,
                                       data_dir=data_config.data_dir)
  if data_config.name == 'fashion_mnist':
    return load_fashion_mnist(split, data_config.data_dir)
  if data_config.name == 'synthetic':
    s = data_config.synthetic
    return make_synthetic(split, num_classes=s.num_classes, per_class=s.per_class,
                          image_shape=tuple(s.image_shape), seed=s.seed)
  raise ValueError(f'Unknown data.name {data_config.name!r}; valid: {SOURCES}.')


class Splits(NamedTuple):
  """The splits of a run: long-tailed train, optional validation, balanced test."""
  train: Source
  val: Source | None
  test: Source
  train_counts: np.ndarray  # (C,) training samples per class.


def load_datasets(data_config: ml_collections.ConfigDict, *,
                  skip_log_dir: str | None = None) -> Splits:
  """Loads the source and builds the long-tailed training split.

  Order of operations: ``val_per_class`` samples of every class are held out
  of the balanced training source (validation split), then the rest is
  subsampled to the long-tail profile (``imbalance_ratio`` > 1; 0 keeps the
  source as it is), with n_max defaulting to the largest remaining class.
  """
  train = load_split(data_config, 'train', skip_log_dir=skip_log_dir)
  test = load_split(data_config, 'test', skip_log_dir=skip_log_dir)
  check_labels(train.labels, train.num_classes, f'{data_config.name} train')
  check_labels(test.labels, train.num_classes, f'{data_config.name} test')
  val = None
  layout = listfile.SPLITS.get(data_config.name)
  if layout is not None and layout.files['val'] != layout.files['test']:
    val = load_split(data_config, 'val', skip_log_dir=skip_log_dir)  # ImageNet-LT / Places-LT ship a validation list.
    check_labels(val.labels, train.num_classes, f'{data_config.name} val')
  if data_config.val_per_class > 0:
    keep, held = longtail.hold_out_indices(train.labels, data_config.val_per_class,
                                           selection=data_config.selection,
                                           seed=data_config.subsample_seed + 1)
    train, val = train.subset(keep), train.subset(held)
  if data_config.imbalance_ratio:
    n_max = data_config.n_max or int(np.bincount(train.labels).max())
    counts = longtail.long_tail_counts(train.num_classes, n_max,
                                       data_config.imbalance_ratio,
                                       data_config.profile)
    keep = longtail.long_tail_indices(train.labels, counts,
                                      selection=data_config.selection,
                                      seed=data_config.subsample_seed)
    train = train.subset(keep)
  counts = np.bincount(train.labels, minlength=train.num_classes)
  if (counts == 0).any():
    raise ValueError(f'Classes {np.flatnonzero(counts == 0).tolist()} have no training '
                     'samples; every class needs at least one.')
  return Splits(train=train, val=val, test=test, train_counts=counts)
