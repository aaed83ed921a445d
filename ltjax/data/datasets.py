"""Data sources and the long-tailed splits of a run.

Every source is random access with one protocol (``Source``): ``len``,
``source[i] -> {'image': (H, W, C) uint8, 'label': int}``, the label array
``labels`` (read without decoding images), ``num_classes``, ``mean``/``std``,
``class_names`` and ``subset(indices)``. ``config.data.name`` selects one:

  fashion_mnist  IDX files of Debian's ``dataset-fashion-mnist`` package
                 (/usr/share/datasets/fashion-mnist) or of ``data.data_dir``;
                 in memory (``ArrayDataset``).
  synthetic      class-dependent gratings, for tests and benchmarks (in memory).
  cifar10, cifar100
                 the python-pickle folders cifar-10-batches-py / cifar-100-python
                 (as torchvision downloads them), ``data.data_dir`` being the
                 folder or its parent; in memory, without TensorFlow
                 (``ltjax.data.cifar_pickle``).
  tfds           a prepared TFDS data set ``data.tfds_name`` (cifar10,
                 cifar100, mnist, ...) under ``data.data_dir``, read from
                 ArrayRecord without TensorFlow (``ltjax.data.tfds_source``).
  imagenet_lt, places_lt, inat2018, mini_imagenet_lt
                 list-file image folders: images under ``data.data_dir``, the
                 OLTR/Decoupling split files (mini-ImageNet-LT: the
                 ``0.01_*.txt`` lists of Vigneswaran et al., images in the
                 ILSVRC-2012 train folder) in ``data.list_dir`` (default: the
                 same directory); JPEGs are decoded in the input workers
                 (``ltjax.data.listfile``). With ``data.records_dir`` the
                 splits are read from records prepared by ``python -m
                 ltjax.prepare`` instead (``ltjax.data.records``).

``load_datasets`` returns the train split (long-tailed by ``data.imbalance_ratio``
unless the source already is), an optional validation split and the test split.

Open long-tailed recognition (OLTR, Liu et al., CVPR 2019; CC-SAM §4.3):
``data.open_classes`` holds classes of the source out of training. Their images
leave train, val and test; the remaining "closed" classes are relabelled
0..C'-1 in their original order (``class_names`` follow); the held-out classes'
test images become ``Splits.open_test``, labelled -1 ("unknown", OLTR's
convention), with their original class ids in ``open_test.original_labels``.

OLTR's own open-set protocol: ``data.open_list`` reads an open-set list --
'oltr' for the data set's ``ImageNet_LT_open.txt`` / ``Places_LT_open.txt``,
or a list path (relative: to ``data.list_dir``) -- whose images (in
``data.open_dir``; default the folder named like the list, beside it, as OLTR
lays them out) become ``Splits.open_test``, every label -1, beside the closed
test split of all C classes. Only list-file data sets have one, and it
excludes ``data.open_classes``.
"""

import dataclasses
import os
from typing import NamedTuple, Protocol

import ml_collections
import numpy as np

from ltjax.data import cifar_pickle
from ltjax.data import idx
from ltjax.data import listfile
from ltjax.data import longtail
from ltjax.data import records
from ltjax.data import tfds_source

FASHION_MNIST_DIRS = ('/usr/share/datasets/fashion-mnist',)
FASHION_MNIST_CLASSES = (
    't-shirt/top',
    'trouser',
    'pullover',
    'dress',
    'coat',
    'sandal',
    'shirt',
    'sneaker',
    'bag',
    'ankle boot',
)
_FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
_MISSING_FASHION_MNIST = (
    'Fashion-MNIST not found: looked for {files} in {dirs}. Install it with '
    '`sudo apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu), or download the four '
    'IDX files from the Fashion-MNIST repository (zalandoresearch/fashion-mnist on GitHub) '
    'and pass their directory as --config.data.data_dir=/path/to/dir.'
)


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
    return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices])


def check_labels(labels: np.ndarray, num_classes: int, name: str) -> None:
  """Fails before training if any label is outside [0, num_classes)."""
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(
        f'{name}: {int(bad.sum())} labels outside [0, {num_classes}) '
        f'(e.g. {np.unique(labels[bad])[:5].tolist()}). The number of classes is the '
        f"training split's, fixed by config.data.name (config.data.synthetic.num_classes "
        f'for synthetic data): fix the label files, or point config.data.data_dir / '
        f'config.data.list_dir at the split files of this data set.'
    )


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
    raise FileNotFoundError(
        _MISSING_FASHION_MNIST.format(files=[image_stem + '[.gz]', label_stem + '[.gz]'], dirs=dirs)
    )
  images = idx.read_idx(paths[0])
  labels = idx.read_idx(paths[1]).astype(np.int32)
  if images.ndim != 3 or len(images) != len(labels):
    raise ValueError(
        f'{paths[0]} and {paths[1]} disagree: images {images.shape}, ' f'labels {labels.shape}.'
    )
  check_labels(labels, 10, paths[1])
  return ArrayDataset(
      images=images[..., None],
      labels=labels,
      num_classes=10,
      mean=(0.2860,),
      std=(0.3530,),
      class_names=FASHION_MNIST_CLASSES,
  )


def make_synthetic(
    split: str, *, num_classes: int, per_class: int, image_shape: tuple[int, int, int], seed: int
) -> ArrayDataset:
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
  project = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
  grating = np.sin(2 * np.pi * frequency[:, None, None] * project + phase[:, None, None])
  images = 128 + 80 * grating[..., None] + rng.normal(0, 40, (len(labels), h, w, channels))
  images = np.clip(images, 0, 255).astype(np.uint8)
  return ArrayDataset(
      images=images,
      labels=labels,
      num_classes=num_classes,
      mean=(0.5,) * channels,
      std=(0.25,) * channels,
      class_names=tuple(f'class_{c}' for c in range(num_classes)),
  )


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


class RelabeledSource:
  """A source whose labels pass through a class map (``data.open_classes``).

  Record i is record i of ``source`` with its label replaced by
  ``mapping[label]``; images are read from ``source`` as they are, so list-file
  JPEGs are still decoded in the input workers. It holds only the wrapped
  source and numpy arrays, so it pickles (into grain workers) whenever the
  wrapped source does.

  Attributes:
    source: the wrapped source, in the original label space.
    mapping: (source.num_classes,) int32: original class -> new label, -1 for
      a class outside the new label space (open-set, "unknown").
    labels: (N,) int32, ``mapping[source.labels]`` (no image is read).
    original_labels: (N,) the wrapped source's labels.
    num_classes: C', the size of the new label space (the model's outputs).
    class_names: C' names.
    mean, std: the wrapped source's normalisation.
  """

  def __init__(
      self, source: 'Source', mapping: np.ndarray, *, num_classes: int, class_names: tuple[str, ...]
  ):
    mapping = np.asarray(mapping, np.int32)
    if mapping.shape != (source.num_classes,):
      raise ValueError(
          f'The class map has shape {mapping.shape}; the source has '
          f'{source.num_classes} classes.'
      )
    if mapping.size and (mapping.min() < -1 or mapping.max() >= num_classes):
      raise ValueError(f'The class map has labels outside [-1, {num_classes}).')
    if len(class_names) != num_classes:
      raise ValueError(f'{len(class_names)} class names for {num_classes} classes.')
    self.source = source
    self.mapping = mapping
    self.labels = mapping[np.asarray(source.labels)]
    self.num_classes = int(num_classes)
    self.class_names = tuple(class_names)
    self.mean = tuple(source.mean)
    self.std = tuple(source.std)

  @property
  def original_labels(self) -> np.ndarray:
    return self.source.labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, C) uint8, 'label': int} (the source protocol)."""
    record = dict(self.source[index])
    # The record's own label: a list-file source with skip_corrupt may return a
    # replacement image, which carries its own label.
    record['label'] = int(self.mapping[record['label']])
    return record

  def encoded(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The wrapped source's encoded image and its (height, width) (``decoder='dali'``)."""
    return self.source.encoded(index)

  def subset(self, indices: np.ndarray) -> 'RelabeledSource':
    """The same source restricted to ``indices``, in that order."""
    return RelabeledSource(
        self.source.subset(indices),
        self.mapping,
        num_classes=self.num_classes,
        class_names=self.class_names,
    )

  def skipped(self) -> set[str]:
    """The wrapped source's skipped images (list-file sources), else none."""
    skipped = getattr(self.source, 'skipped', None)
    return set(skipped()) if skipped is not None else set()

  def __repr__(self) -> str:
    return f'RelabeledSource({self.source!r}, n={len(self)}, num_classes={self.num_classes})'


def relabel(source: 'Source', mapping: np.ndarray, class_names: tuple[str, ...]) -> 'Source':
  """``source`` with label c replaced by ``mapping[c]`` and ``class_names``.

  An ``ArrayDataset`` whose new labels are all known (>= 0) stays an
  ``ArrayDataset``, which the input pipeline slices at once; any other source
  is wrapped in a ``RelabeledSource`` (a wrapped one is re-mapped, not nested).
  """
  mapping = np.asarray(mapping, np.int32)
  num_classes = len(class_names)
  if isinstance(source, RelabeledSource):
    composed = np.where(source.mapping >= 0, mapping[np.maximum(source.mapping, 0)], -1)
    return RelabeledSource(
        source.source, composed, num_classes=num_classes, class_names=class_names
    )
  if isinstance(source, ArrayDataset):
    if mapping.shape != (source.num_classes,):
      raise ValueError(
          f'The class map has shape {mapping.shape}; the source has '
          f'{source.num_classes} classes.'
      )
    labels = mapping[source.labels]
    if (labels >= 0).all():
      return dataclasses.replace(
          source, labels=labels, num_classes=num_classes, class_names=tuple(class_names)
      )
  return RelabeledSource(source, mapping, num_classes=num_classes, class_names=class_names)


def open_class_map(open_classes, num_classes: int, name: str = '') -> np.ndarray:
  """Validates ``data.open_classes``; returns the class map of the closed classes.

  Args:
    open_classes: original class ids held out as open-set classes.
    num_classes: C, the classes of the source.
    name: the data set, for messages.

  Returns:
    (C,) int32: closed class c -> its rank among the closed classes (0..C'-1,
    in the original order); open class -> -1.

  Raises:
    ValueError: an id is not an integer or outside [0, C), an id repeats, or
      fewer than 2 closed classes would remain.
  """
  key = 'config.data.open_classes'
  valid = (
      f'valid ids are 0..{num_classes - 1} (the {num_classes} classes of '
      f'{name or "the source"})'
  )
  try:
    ids = tuple(open_classes)
  except TypeError:
    raise ValueError(
        f'{key} must be a tuple of class ids, got {open_classes!r}; ' f'{valid}.'
    ) from None
  bad = [c for c in ids if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
  if bad:
    raise ValueError(f'{key} must hold integer class ids, got {bad}; {valid}.')
  ids = [int(c) for c in ids]
  outside = sorted({c for c in ids if not 0 <= c < num_classes})
  if outside:
    raise ValueError(f'{key} has ids {outside} outside the valid range; {valid}.')
  duplicates = sorted({c for c in ids if ids.count(c) > 1})
  if duplicates:
    raise ValueError(
        f'{key} lists {duplicates} more than once; give each held-out ' f'class once ({valid}).'
    )
  closed = np.setdiff1d(np.arange(num_classes), ids)
  if len(closed) < 2:
    raise ValueError(
        f'{key} holds out {len(ids)} of {num_classes} classes, leaving '
        f'{len(closed)} closed; at least 2 must remain for training '
        f'({valid}).'
    )
  mapping = np.full(num_classes, -1, np.int32)
  mapping[closed] = np.arange(len(closed), dtype=np.int32)
  return mapping


def _closed(source: 'Source', mapping: np.ndarray, class_names: tuple[str, ...]) -> 'Source':
  """The closed-class records of ``source`` (file order), relabelled by ``mapping``."""
  return relabel(source.subset(np.flatnonzero(mapping[source.labels] >= 0)), mapping, class_names)


def _check_open_list(data_config: ml_collections.ConfigDict, open_classes) -> None:
  """Fails before any data is read if ``data.open_list`` cannot apply."""
  if not isinstance(data_config.open_list, str):
    raise ValueError(
        f"config.data.open_list must be a string ('{listfile.OLTR_OPEN_LIST}' or a list "
        f'path), got {data_config.open_list!r}.'
    )
  if data_config.name not in listfile.SPLITS:
    raise ValueError(
        f'config.data.open_list={data_config.open_list!r} needs a list-file data set '
        f'({sorted(listfile.SPLITS)}), not data.name={data_config.name!r}; hold classes '
        'of this source out with config.data.open_classes instead.'
    )
  if open_classes:
    raise ValueError(
        'config.data.open_list and config.data.open_classes both define the open-set '
        f'split (open_list={data_config.open_list!r}, open_classes={tuple(open_classes)}); '
        'set one of them.'
    )


ARRAY_SOURCES = ('fashion_mnist', 'synthetic') + tuple(cifar_pickle.FOLDERS)
SOURCES = ARRAY_SOURCES + ('tfds',) + tuple(listfile.SPLITS)


def load_split(
    data_config: ml_collections.ConfigDict, split: str, *, skip_log_dir: str | None = None
) -> Source:
  """Split 'train', 'val' or 'test' of the source named by ``data_config.name``.

  ``skip_log_dir``: where list-file sources record images skipped as corrupt
  (with ``data.skip_corrupt``), so skips in worker processes are counted too.
  """
  if data_config.name in listfile.SPLITS and data_config.get('records_dir'):
    return records.load_records_split(
        data_config.records_dir,
        data_config.name,
        split,
        list_file=listfile.split_file(
            data_config.name, split, data_config.data_dir, data_config.list_dir
        ),
    )
  if data_config.name in listfile.SPLITS:
    return listfile.load_list_split(
        data_config.name,
        split,
        root=data_config.data_dir,
        list_dir=data_config.list_dir or None,
        skip_corrupt=data_config.skip_corrupt,
        skip_log_dir=skip_log_dir,
    )
  if data_config.name == 'tfds':
    return tfds_source.load_tfds_split(data_config.tfds_name, split, data_dir=data_config.data_dir)
  if data_config.name in cifar_pickle.FOLDERS:
    return ArrayDataset(**cifar_pickle.read_split(data_config.name, split, data_config.data_dir))
  if data_config.name == 'fashion_mnist':
    return load_fashion_mnist(split, data_config.data_dir)
  if data_config.name == 'synthetic':
    s = data_config.synthetic
    return make_synthetic(
        split,
        num_classes=s.num_classes,
        per_class=s.per_class,
        image_shape=tuple(s.image_shape),
        seed=s.seed,
    )
  raise ValueError(f'Unknown data.name {data_config.name!r}; valid: {SOURCES}.')


class Splits(NamedTuple):
  """The splits of a run: long-tailed train, optional validation, balanced test.

  ``open_test`` (None unless ``data.open_classes`` or ``data.open_list`` is
  set) holds open-set images, every label -1 ("unknown"): with
  ``open_classes`` the test images of the held-out classes (their original
  class ids in ``open_test.original_labels``), with ``open_list`` the images
  of that list (a ``ListFileSource`` with ``open_set=True``).
  """

  train: Source
  val: Source | None
  test: Source
  train_counts: np.ndarray  # (C,) training samples per class.
  open_test: Source | None = None


def load_datasets(
    data_config: ml_collections.ConfigDict, *, skip_log_dir: str | None = None
) -> Splits:
  """Loads the source and builds the long-tailed training split.

  Order of operations: ``val_per_class`` samples of every class are held out
  of the balanced training source (validation split), then the rest is
  subsampled to the long-tail profile (``imbalance_ratio`` > 1; 0 keeps the
  source as it is), with n_max defaulting to the largest remaining class.

  With ``data.open_classes`` those classes are removed from every split first
  (so the hold-out and the long tail are over the C' closed classes, head =
  the first closed class), the closed classes are relabelled 0..C'-1 in their
  original order, and the open classes' test images form ``open_test``
  (labels -1; see ``Splits``). Open-class images of the train and val splits
  are dropped. With ``data.open_list`` the images of that list form
  ``open_test`` instead (module docstring); the closed splits keep every class.
  """
  open_classes = data_config.get('open_classes', ())
  open_list = data_config.get('open_list', '')
  if open_list:
    _check_open_list(data_config, open_classes)
    open_list, open_dir = listfile.open_list_paths(
        data_config.name,
        open_list,
        list_dir=data_config.list_dir or data_config.data_dir,
        open_dir=data_config.get('open_dir', ''),
    )
  train = load_split(data_config, 'train', skip_log_dir=skip_log_dir)
  test = load_split(data_config, 'test', skip_log_dir=skip_log_dir)
  check_labels(train.labels, train.num_classes, f'{data_config.name} train')
  check_labels(test.labels, train.num_classes, f'{data_config.name} test')
  val = None
  layout = listfile.SPLITS.get(data_config.name)
  if layout is not None and 'val' in listfile.distinct_splits(data_config.name):
    val = load_split(
        data_config, 'val', skip_log_dir=skip_log_dir
    )  # ImageNet-LT / Places-LT ship a validation list.
    check_labels(val.labels, train.num_classes, f'{data_config.name} val')
  open_test = None
  if open_list:
    open_test = listfile.load_open_list(
        open_list,
        open_dir,
        num_classes=train.num_classes,
        class_names=train.class_names,
        mean=train.mean,
        std=train.std,
        expected_size=(layout.open_size if os.path.basename(open_list) == layout.open_file else 0),
        skip_corrupt=data_config.skip_corrupt,
        skip_log_dir=skip_log_dir,
    )
  if open_classes:
    mapping = open_class_map(open_classes, train.num_classes, data_config.name)
    names = tuple(n for n, m in zip(train.class_names, mapping) if m >= 0)
    open_test = RelabeledSource(
        test.subset(np.flatnonzero(mapping[test.labels] < 0)),
        np.full_like(mapping, -1),
        num_classes=len(names),
        class_names=names,
    )
    train, test = _closed(train, mapping, names), _closed(test, mapping, names)
    if val is not None:
      val = _closed(val, mapping, names)
  if data_config.val_per_class > 0:
    keep, held = longtail.hold_out_indices(
        train.labels,
        data_config.val_per_class,
        selection=data_config.selection,
        seed=data_config.subsample_seed + 1,
    )
    train, val = train.subset(keep), train.subset(held)
  if data_config.imbalance_ratio:
    available = np.bincount(train.labels, minlength=train.num_classes)
    n_max = data_config.n_max or int(available.max())
    try:
      counts = longtail.long_tail_counts(
          train.num_classes, n_max, data_config.imbalance_ratio, data_config.profile
      )
      keep = longtail.long_tail_indices(
          train.labels, counts, selection=data_config.selection, seed=data_config.subsample_seed
      )
    except ValueError as e:
      raise ValueError(
          f'{data_config.name}: the long tail of config.data.n_max={data_config.n_max} '
          f'(0: the largest class, here {n_max}), config.data.imbalance_ratio='
          f'{data_config.imbalance_ratio}, config.data.profile={data_config.profile!r} cannot be '
          f'drawn: {e} The training source has {int(available.min())} to '
          f'{int(available.max())} images per class'
          + (
              f' after config.data.val_per_class={data_config.val_per_class}'
              if val is not None
              else ''
          )
          + ': lower config.data.n_max (or the imbalance ratio).'
      ) from e
    train = train.subset(keep)
  counts = np.bincount(train.labels, minlength=train.num_classes)
  if (counts == 0).any():
    raise ValueError(
        f'Classes {np.flatnonzero(counts == 0).tolist()} have no training '
        'samples; every class needs at least one.'
    )
  return Splits(train=train, val=val, test=test, train_counts=counts, open_test=open_test)


def check_readable(source, name: str, *, skip_corrupt: bool = False) -> None:
  """Fails now, naming the files, if an image of ``source`` cannot be decoded.

  For sources read from image files (list files; in-memory sources have
  nothing to check). With ``skip_corrupt`` the unreadable images are recorded
  as skipped instead (the source then replaces them when read).
  """
  inner = source.source if isinstance(source, RelabeledSource) else source
  if not hasattr(inner, 'unreadable'):
    return
  bad = inner.unreadable()
  if not bad:
    return
  if skip_corrupt:
    for index, error in bad:
      inner._record_skip(inner.path(index), error)  # pylint: disable=protected-access
    return
  errors = list(dict.fromkeys(error for _, error in bad))  # A file listed twice, once.
  shown = '\n  '.join(errors[:5])
  more = f'\n  ... and {len(errors) - 5} more' if len(errors) > 5 else ''
  raise listfile.UnreadableImageError(
      f'{len(bad)} record(s) of the {name} split cannot be read:\n  {shown}{more}\nReplace '
      'them, remove their lines from the list file, or set config.data.skip_corrupt=True to '
      'skip unreadable images (config.data.verify_eval_images=False skips this check). Nothing '
      'was trained.'
  )
