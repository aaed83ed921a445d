"""TFDS data sets as random-access sources, read without TensorFlow.

A prepared TFDS data set is a directory

    <data_dir>/<name>[/<config>]/<version>/
        dataset_info.json, features.json, [metadata.json,]
        <name>-<split>.array_record-00000-of-0000N, ...

whose records are serialized ``tf.train.Example`` protos. tensorflow-datasets
(an optional dependency: ``pip install ltjax[tfds]``) reads ArrayRecord files
and parses the protos with numpy and protobuf alone; TensorFlow is needed
only to *prepare* its stock data sets (``tfds build``).

``load_tfds_split`` wraps one split into a ``TfdsSource`` with the protocol of
``ltjax.data.ArrayDataset``. It first checks with ``etils.epath`` (which
handles ``gs://``) that the prepared directory and its ArrayRecord files
exist and fails in seconds naming the path; only then is TFDS called, and
only on that directory (``tfds.builder_from_directory``: no registry
lookup, no download, no network).

``prepare_from_arrays`` writes numpy arrays as such a directory without
TensorFlow (raw uint8 tensors, record order = array order), for tests and
for data that is already in memory.
"""

import json
import re
import tempfile
import types

from absl import logging
import numpy as np

from ltjax.data import source_index

# Per-channel mean/std in [0, 1] units. CIFAR: the LDAM lineage's constants.
NORMALIZATION = {
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'cifar100': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'fashion_mnist': ((0.2860,), (0.3530,)),
    'mnist': ((0.1307,), (0.3081,)),
}

_INSTALL = (
    'tensorflow-datasets is not installed; install the optional extra with '
    '`pip install ltjax[tfds]` (it does not pull TensorFlow).'
)
_PREPARE = (
    'Prepare it with `tfds build {name} --data_dir={data_dir} '
    '--file_format=array_record` (needs TensorFlow: `pip install ltjax[tfds] '
    'tensorflow`; on a machine without it, build elsewhere and copy the {folder}/ folder '
    'into {data_dir}), or write in-memory arrays with '
    'ltjax.data.tfds_source.prepare_from_arrays.'
)
_VERSION = re.compile(r'^\d+\.\d+\.\d+$')
# Labels read per split, per process: a second load of the same split is free.
_LABEL_CACHE: dict[tuple[str, str], np.ndarray] = {}
_LABEL_CHUNK = 4096


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_INSTALL) from e
  return tfds


def _epath():
  from etils import epath  # pylint: disable=g-import-not-at-top

  return epath


def _version_key(version: str) -> tuple[int, ...]:
  return tuple(int(v) for v in version.split('.'))


def find_prepared(name: str, data_dir: str) -> str:
  """The directory of a prepared TFDS data set, checked without calling TFDS.

  Args:
    name: 'name', 'name:1.2.3', 'name/config' or 'name/config:1.2.3'; without
      a version the highest prepared version is used.
    data_dir: the TFDS data directory (local or gs://).

  Returns:
    ``<data_dir>/<name>[/<config>]/<version>`` as a string.

  Raises:
    FileNotFoundError: anything missing; the message names the path looked
      for and how to prepare the data.
  """
  epath = _epath()
  base, _, version = name.partition(':')
  how = _PREPARE.format(name=base, folder=base.split('/')[0], data_dir=data_dir)
  root = epath.Path(data_dir)
  if not root.is_dir():
    raise FileNotFoundError(f'TFDS data_dir {data_dir} does not exist. {how}')
  dataset_dir = root / base
  if not dataset_dir.is_dir():
    raise FileNotFoundError(
        f'TFDS data set {base!r} not found: {dataset_dir} does not ' f'exist. {how}'
    )
  if not version:
    versions = [
        p.name
        for p in dataset_dir.iterdir()
        if _VERSION.match(p.name) and (p / 'dataset_info.json').exists()
    ]
    if not versions:
      configs = sorted(
          p.name
          for p in dataset_dir.iterdir()
          if p.is_dir() and not p.name.startswith('incomplete') and not _VERSION.match(p.name)
      )
      hint = (
          f' It has the configs {configs}: name one, e.g. {base}/{configs[0]}.' if configs else ''
      )
      raise FileNotFoundError(
          f'No prepared version of {base!r} in {dataset_dir} (looked '
          f'for <version>/dataset_info.json).{hint} {how}'
      )
    version = max(versions, key=_version_key)
  builder_dir = dataset_dir / version
  if not (builder_dir / 'dataset_info.json').exists():
    raise FileNotFoundError(
        f'TFDS data set {name!r} not prepared: '
        f'{builder_dir / "dataset_info.json"} does not exist. {how}'
    )
  files = [p.name for p in builder_dir.iterdir()]
  if not any('.array_record' in f for f in files):
    found = 'TFRecord files' if any('.tfrecord' in f for f in files) else f'only {sorted(files)}'
    raise FileNotFoundError(
        f'{builder_dir} has no ArrayRecord files ({found}); random access needs '
        f'--file_format=array_record. {how}'
    )
  return str(builder_dir)


class TfdsSource:
  """Random-access source over one split of a prepared TFDS data set.

  The TFDS data source is opened lazily in each process (and dropped when
  pickled), so the object pickles into grain workers.

  Attributes:
    builder_dir: the prepared directory.
    split: the TFDS split string.
    labels: (N,) int32.
    num_classes, mean, std, class_names: as ``ArrayDataset``.
    image_key, label_key: the feature names read.
  """

  def __init__(
      self,
      builder_dir: str,
      split: str,
      *,
      labels: np.ndarray,
      num_classes: int,
      mean,
      std,
      class_names,
      image_key: str = 'image',
      label_key: str = 'label',
      indices: np.ndarray | None = None,
  ):
    self.builder_dir = builder_dir
    self.split = split
    self.labels = np.asarray(labels, np.int32)
    self.num_classes = int(num_classes)
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.class_names = tuple(class_names)
    self.image_key = image_key
    self.label_key = label_key
    # Record numbers in the TFDS split; None means all of them, in order.
    self._indices = None if indices is None else np.asarray(indices, np.int64)
    self._source = None

  def _data_source(self):
    if self._source is None:
      builder = _tfds().builder_from_directory(self.builder_dir)
      self._source = builder.as_data_source(split=self.split)
    return self._source

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, C) uint8, 'label': int} (the source protocol)."""
    record = self._data_source()[source_index.record_number(index, len(self), self._indices)]
    image = np.asarray(record[self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3:
      raise ValueError(
          f'{self.builder_dir} split {self.split}: feature '
          f'{self.image_key!r} is {image.dtype} {image.shape}, expected an '
          '(H, W, C) uint8 image.'
      )
    return {'image': image, 'label': int(record[self.label_key])}

  def subset(self, indices: np.ndarray) -> 'TfdsSource':
    """The same source restricted to ``indices``, in that order."""
    indices = np.asarray(indices, np.int64)
    records = indices if self._indices is None else self._indices[indices]
    return TfdsSource(
        self.builder_dir,
        self.split,
        labels=self.labels[indices],
        num_classes=self.num_classes,
        mean=self.mean,
        std=self.std,
        class_names=self.class_names,
        image_key=self.image_key,
        label_key=self.label_key,
        indices=records,
    )

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)
    state['_source'] = None  # Reopened in the unpickling process.
    return state

  def __repr__(self) -> str:
    return f'TfdsSource({self.builder_dir!r}, split={self.split!r}, n={len(self)})'


def _read_labels(builder, builder_dir: str, split: str, label_key: str) -> np.ndarray:
  """All labels of a split, in record order: one pass over the records.

  Every other top-level feature is left undecoded (``SkipDecoding``), so no
  image is decoded; the cost is reading each record once and parsing its
  proto: about 5 s for 50,000 CIFAR-sized records (2-core CPU, warm page
  cache); for a split of JPEGs it is one full read of the split's files.
  """
  key = (builder_dir, split)
  if key not in _LABEL_CACHE:
    tfds = _tfds()
    skip = {k: tfds.decode.SkipDecoding() for k in builder.info.features.keys() if k != label_key}
    source = builder.as_data_source(split=split, decoders=skip)
    labels = np.empty(len(source), np.int64)
    for start in range(0, len(source), _LABEL_CHUNK):
      stop = min(start + _LABEL_CHUNK, len(source))
      records = source.__getitems__(range(start, stop))
      labels[start:stop] = [r[label_key] for r in records]
    _LABEL_CACHE[key] = labels.astype(np.int32)
  return _LABEL_CACHE[key]


def _metadata_normalization(builder_dir: str):
  path = _epath().Path(builder_dir) / 'metadata.json'
  if not path.exists():
    return None
  metadata = json.loads(path.read_text())
  if 'mean' in metadata and 'std' in metadata:
    return tuple(metadata['mean']), tuple(metadata['std'])
  return None


def load_tfds_split(
    name: str,
    split: str,
    *,
    data_dir: str,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    image_key: str = 'image',
    label_key: str = 'label',
) -> TfdsSource:
  """One split of a prepared TFDS data set, as a random-access source.

  Args:
    name: TFDS name, optionally with config and version ('cifar10',
      'cifar10:3.0.2', 'name/config').
    split: a TFDS split string ('train', 'test', 'train[:90%]').
    data_dir: the TFDS data directory (local or gs://).
    mean, std: normalisation; default ``NORMALIZATION[name]``, else the
      ``mean``/``std`` stored by ``prepare_from_arrays``.
    image_key, label_key: feature names of the image and the label.

  Returns:
    The source. Its labels are read once (one pass over the split's records,
    no image decoding) and cached in memory for this process.

  Raises:
    FileNotFoundError: the data set is not prepared under data_dir.
    ImportError: tensorflow-datasets is not installed.
    ValueError: unknown split or feature, or no normalisation known.
  """
  builder_dir = find_prepared(name, data_dir)  # Before any TFDS call: fails fast.
  tfds = _tfds()
  builder = tfds.builder_from_directory(builder_dir)
  info = builder.info
  for part in split.split('+'):
    base = part.split('[')[0].strip()
    if base not in info.splits:
      raise ValueError(f'{builder_dir} has no split {base!r}; valid: {sorted(info.splits)}.')
  features = info.features
  for key in (image_key, label_key):
    if key not in features.keys():
      raise ValueError(
          f'{builder_dir} has no feature {key!r}; features: '
          f'{sorted(features.keys())}. Pass image_key/label_key.'
      )
  base_name = name.partition(':')[0].split('/')[0]
  if mean is None or std is None:
    known = NORMALIZATION.get(base_name) or _metadata_normalization(builder_dir)
    if known is None:
      raise ValueError(
          f'No normalisation known for TFDS data set {base_name!r} (known: '
          f'{sorted(NORMALIZATION)}); pass mean= and std= (per channel, in '
          '[0, 1] units).'
      )
    mean = known[0] if mean is None else mean
    std = known[1] if std is None else std
  labels = _read_labels(builder, builder_dir, split, label_key)
  label_feature = features[label_key]
  if isinstance(label_feature, tfds.features.ClassLabel):
    num_classes = label_feature.num_classes
    class_names = tuple(label_feature.names)
  else:
    num_classes = int(labels.max()) + 1
    class_names = tuple(f'class_{c}' for c in range(num_classes))
  source = TfdsSource(
      builder_dir,
      split,
      labels=labels,
      num_classes=num_classes,
      mean=mean,
      std=std,
      class_names=class_names,
      image_key=image_key,
      label_key=label_key,
  )
  source._source = builder.as_data_source(split=split)  # pylint: disable=protected-access
  return source


def prepare_from_arrays(
    name: str,
    data_dir: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    class_names: tuple[str, ...] | None = None,
    num_classes: int | None = None,
    version: str = '1.0.0',
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> str:
  """Writes numpy arrays as a prepared TFDS data set, without TensorFlow.

  Features: 'image' a ``tfds.features.Tensor`` of uint8 (H, W, C) (raw
  bytes, no image codec) and 'label' a ``ClassLabel``. Shuffling is disabled,
  so record i of a split is element i of its arrays. The per-channel
  mean/std (given, or computed from the 'train' split, else the first split)
  are stored in metadata.json, where ``load_tfds_split`` finds them.

  Args:
    name: data set name, snake_case (the directory name under data_dir).
    data_dir: TFDS data directory.
    splits: split name -> (images (N, H, W[, C]) uint8, labels (N,) int).
    class_names: class names; default '0', '1', ...
    num_classes: default len(class_names), else max label + 1.
    version: 'x.y.z'.
    mean, std: normalisation to store (see above).
    overwrite: replace an existing prepared version instead of failing.

  Returns:
    The prepared directory ``<data_dir>/<name>/<version>``.
  """
  tfds = _tfds()
  epath = _epath()
  if not re.fullmatch(r'[a-z][a-z0-9_]*', name):
    raise ValueError(f'Data set name {name!r} must be snake_case ([a-z][a-z0-9_]*).')
  if not splits:
    raise ValueError('splits is empty; give at least one {split: (images, labels)}.')
  arrays = {}
  for split, (images, labels) in splits.items():
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
      images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
      raise ValueError(
          f'Split {split!r}: expected uint8 images (N, H, W[, C]) and labels '
          f'(N,), got {images.dtype} {images.shape} and {labels.shape}.'
      )
    arrays[split] = (images, labels.astype(np.int64))
  shapes = {split: a[0].shape[1:] for split, a in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f'All splits need the same image shape, got {shapes}.')
  shape = next(iter(shapes.values()))
  if num_classes is None:
    num_classes = (
        len(class_names)
        if class_names is not None
        else int(max(a[1].max() for a in arrays.values())) + 1
    )
  for split, (_, labels) in arrays.items():
    if labels.min() < 0 or labels.max() >= num_classes:
      raise ValueError(f'Split {split!r}: labels outside [0, {num_classes}).')
  if mean is None or std is None:
    images = arrays['train' if 'train' in arrays else next(iter(arrays))][0]
    pixels = images.reshape(-1, shape[-1]).astype(np.float64) / 255.0
    mean = pixels.mean(0).tolist() if mean is None else mean
    std = pixels.std(0).tolist() if std is None else std
  target = epath.Path(data_dir) / name / version
  if target.exists():
    if not overwrite:
      raise FileExistsError(f'{target} already exists; pass overwrite=True to replace it.')
    target.rmtree()
    for key in [k for k in _LABEL_CACHE if k[0] == str(target)]:
      del _LABEL_CACHE[key]  # Labels of the replaced data are stale.
  label_feature = (
      tfds.features.ClassLabel(names=list(class_names))
      if class_names is not None
      else tfds.features.ClassLabel(num_classes=num_classes)
  )

  def body(ns):
    ns['name'] = name
    ns['VERSION'] = tfds.core.Version(version)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description='Prepared from numpy arrays by ltjax.',
          features=tfds.features.FeaturesDict(
              {'image': tfds.features.Tensor(shape=shape, dtype=np.uint8), 'label': label_feature}
          ),
          metadata=tfds.core.MetadataDict(mean=list(mean), std=list(std)),
          disable_shuffling=True,
      )  # Keep record i == array element i.

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(*a) for split, a in arrays.items()}

    def _generate_examples(self, images, labels):
      for i, (image, label) in enumerate(zip(images, labels)):
        yield i, {'image': image, 'label': int(label)}

    ns.update(
        _info=_info, _split_generators=_split_generators, _generate_examples=_generate_examples
    )

  # skip_registration: preparing the same name twice must not clash in TFDS's registry.
  builder_cls = types.new_class(
      'ArraysBuilder', (tfds.core.GeneratorBasedBuilder,), {'skip_registration': True}, body
  )
  builder = builder_cls(data_dir=str(data_dir), file_format='array_record')
  with tempfile.TemporaryDirectory() as downloads:  # Keep data_dir free of downloads/.
    builder.download_and_prepare(download_dir=downloads)
  logging.info('Prepared %s (%s) in %s.', name, {s: len(a[1]) for s, a in arrays.items()}, target)
  return str(target)
