"""CIFAR-10/100 read from the official python-pickle folders, without TensorFlow.

The folders that torchvision (``torchvision.datasets.CIFAR10(root,
download=True)``) and the official training code download and extract:

    cifar-10-batches-py/   data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each batch file is a pickled dict (Python 2 ``cPickle``, read with
``encoding='bytes'``): ``b'data'`` a (N, 3072) uint8 numpy array, each row a
32x32 image in CHW order (1024 red, 1024 green, 1024 blue values, row-major);
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` and ``b'coarse_labels'``
(CIFAR-100) lists of ints; ``b'filenames'`` and ``b'batch_label'``. The meta
file holds the class names (``b'label_names'``; CIFAR-100:
``b'fine_label_names'``, ``b'coarse_label_names'``).

``read_split`` returns the fields of an ``ltjax.data.ArrayDataset``: (N, 32,
32, 3) uint8 images, int32 (fine) labels in file order (train: the five
CIFAR-10 batches in order), the class names of the meta file and the
normalisation of the TFDS CIFAR source (``tfds_source.NORMALIZATION``), so the
two sources give the same data set when their record order is the same.

Pickles are read with ``RestrictedUnpickler``: it refuses every global except
the numpy callables that rebuild a plain ndarray and its dtype (see
``ALLOWED_GLOBALS``), so a tampered file fails with ``RefusedGlobalError``
before anything in it is called.
"""

import os
import pickle

import numpy as np

from ltjax.data import tfds_source

# data.name -> the folder the python version of the data set extracts to.
FOLDERS = {'cifar10': 'cifar-10-batches-py', 'cifar100': 'cifar-100-python'}
_TITLES = {'cifar10': 'CIFAR-10', 'cifar100': 'CIFAR-100'}
_TORCHVISION = {'cifar10': 'CIFAR10', 'cifar100': 'CIFAR100'}
_ARCHIVES = {'cifar10': 'cifar-10-python.tar.gz', 'cifar100': 'cifar-100-python.tar.gz'}
SPLIT_FILES = {
    'cifar10': {'train': tuple(f'data_batch_{i}' for i in range(1, 6)), 'test': ('test_batch',)},
    'cifar100': {'train': ('train',), 'test': ('test',)},
}
META_FILES = {'cifar10': 'batches.meta', 'cifar100': 'meta'}
LABEL_KEYS = {'cifar10': b'labels', 'cifar100': b'fine_labels'}
CLASS_NAME_KEYS = {'cifar10': b'label_names', 'cifar100': b'fine_label_names'}
IMAGE_SHAPE = (32, 32, 3)  # One row of b'data' is these 3072 values in CHW order.

_array = np.zeros((1, 1), np.uint8)
_RECONSTRUCT = _array.__reduce__()[0]  # numpy.{_core,core}.multiarray._reconstruct
_FROMBUFFER = _array.__reduce_ex__(5)[0]  # numpy.{_core,core}.numeric._frombuffer
del _array

# The only globals a CIFAR pickle may name: what a plain ndarray and its dtype
# pickle to. Python 2 and numpy < 2 write numpy.core.*, numpy >= 2 numpy._core.*;
# _frombuffer is what numpy writes for pickle protocol 5 (Python 3's default).
ALLOWED_GLOBALS = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('numpy.core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy._core.multiarray', '_reconstruct'): _RECONSTRUCT,
    ('numpy.core.numeric', '_frombuffer'): _FROMBUFFER,
    ('numpy._core.numeric', '_frombuffer'): _FROMBUFFER,
}


class RefusedGlobalError(pickle.UnpicklingError, ValueError):
  """A pickle named a global outside ``ALLOWED_GLOBALS``; nothing was called.

  A ValueError too: a tampered file is bad input (the commands exit 2), not a bug.
  """


class RestrictedUnpickler(pickle.Unpickler):
  """An unpickler that resolves only ``ALLOWED_GLOBALS`` (plain numpy arrays).

  Dicts, lists, tuples, bytes, str, numbers and numpy ndarrays/dtypes load;
  any other global (a class, ``os.system``, ``builtins.eval``, even another
  numpy function) raises ``RefusedGlobalError`` naming the file and the
  global, before anything is called. Persistent ids and out-of-band buffers are
  refused by ``pickle`` itself (no ``persistent_load``, no ``buffers``).
  """

  def __init__(self, file, *, path: str):
    super().__init__(file, encoding='bytes')
    self.path = path

  def find_class(self, module: str, name: str):
    found = ALLOWED_GLOBALS.get((module, name))
    if found is None:
      hint = (
          ' (a pickle written by Python 3 with protocol < 3; CIFAR files hold bytes as '
          'Python 2 strings, re-save with protocol 4)'
          if (module, name) == ('_codecs', 'encode')
          else ''
      )
      raise RefusedGlobalError(
          f'{self.path}: refused to load the global {module}.{name}{hint}: a global would be '
          'called while loading, and CIFAR files are read as data, not code (nothing of the '
          'file ran). A CIFAR pickle holds only dicts, lists, bytes, str, ints and numpy '
          f'arrays; allowed globals: {sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)}. The '
          'file is not an official CIFAR file: re-download it.'
      )
    return found


def load_pickle(path: str):
  """The object pickled in ``path``, read with ``RestrictedUnpickler``.

  Raises:
    RefusedGlobalError: the pickle names a global outside ``ALLOWED_GLOBALS``.
    ValueError: the file is truncated or corrupt.
  """
  with open(path, 'rb') as f:
    try:
      return RestrictedUnpickler(f, path=path).load()
    except RefusedGlobalError:
      raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
    ) as e:
      raise ValueError(
          f'{path} is truncated or corrupt ({type(e).__name__}: {e}); re-download the '
          'CIFAR python version and extract it again.'
      ) from e


def _how_to_get(name: str) -> str:
  folder = FOLDERS[name]
  return (
      f'torchvision downloads it: `torchvision.datasets.{_TORCHVISION[name]}(root, '
      f'download=True)` creates root/{folder}; or extract the official {_ARCHIVES[name]} '
      f'(the "python version" of the CIFAR page) with `tar xzf {_ARCHIVES[name]}`. Then pass '
      f'--config.data.data_dir=root (the parent) or root/{folder} (the folder itself).'
  )


def _expected(name: str) -> list[str]:
  files = SPLIT_FILES[name]
  return list(files['train']) + list(files['test']) + [META_FILES[name]]


def find_folder(name: str, data_dir: str) -> str:
  """The CIFAR folder: ``data_dir`` itself or ``data_dir/<folder>``.

  Args:
    name: 'cifar10' or 'cifar100'.
    data_dir: the folder ``cifar-10-batches-py`` / ``cifar-100-python`` or a
      directory containing it (``~`` is expanded).

  Returns:
    The folder's path.

  Raises:
    ValueError: unknown name.
    FileNotFoundError: neither is a CIFAR folder; the message says which
      files are expected and how to download them.
  """
  if name not in FOLDERS:
    raise ValueError(f'Unknown CIFAR data set {name!r}; valid: {sorted(FOLDERS)}.')
  folder, title, expected = FOLDERS[name], _TITLES[name], _expected(name)
  files = f'{folder}/ with {", ".join(expected)}'
  if not data_dir:
    raise FileNotFoundError(
        f'{title}: config.data.data_dir is empty; point it at the folder {files}, or at its '
        f'parent directory. {_how_to_get(name)}'
    )
  root = os.path.expanduser(data_dir)
  nested = os.path.join(root, folder)
  if os.path.isdir(nested):
    return nested
  if os.path.isdir(root) and (
      os.path.basename(os.path.normpath(root)) == folder
      or any(os.path.isfile(os.path.join(root, f)) for f in expected)
  ):
    return root
  hints = []
  if os.path.isdir(root):
    entries = set(os.listdir(root))
    if _ARCHIVES[name] in entries:
      hints.append(f'{root} holds {_ARCHIVES[name]}: extract it there with `tar xzf`.')
    for other, other_folder in FOLDERS.items():
      if other != name and other_folder in entries:
        hints.append(f'{root} holds {other_folder}: did you mean data.name={other!r}?')
    where = f'neither {root} nor {nested} is the folder'
  elif os.path.exists(root):
    where = f'{root} is a file, not a directory; expected the folder'
    if root.endswith('.tar.gz'):
      hints.append(f'Extract it with `tar xzf {root}` and pass the directory it extracts to.')
  else:
    where = f'{root} does not exist; expected the folder'
  raise FileNotFoundError(
      f'{title} not found: {where} {files}. {" ".join(hints)}{" " if hints else ""}'
      f'{_how_to_get(name)}'
  )


def _bytes_keys(obj, path: str) -> dict:
  """A pickled dict with its str keys as bytes (files re-saved by Python 3)."""
  if not isinstance(obj, dict):
    raise ValueError(
        f'{path} holds a {type(obj).__name__}, expected a dict; is it a CIFAR python file?'
    )
  return {k.encode() if isinstance(k, str) else k: v for k, v in obj.items()}


def _sorted_keys(obj: dict) -> list:
  # By repr: a tampered dict may mix key types, which sorted() alone cannot order.
  return sorted(obj, key=repr)


def _names(values, path: str, key: bytes) -> tuple[str, ...]:
  if not isinstance(values, (list, tuple)) or not all(isinstance(v, (bytes, str)) for v in values):
    raise ValueError(f'{path}: {key!r} is not a list of names.')
  return tuple(v.decode('utf-8') if isinstance(v, bytes) else v for v in values)


def _read_batch(path: str, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(images (N, 32, 32, 3) uint8, labels (N,) int32) of one batch file."""
  batch = _bytes_keys(load_pickle(path), path)
  missing = [k for k in (b'data', label_key) if k not in batch]
  if missing:
    raise ValueError(f'{path} has no {missing} (keys: {_sorted_keys(batch)}).')
  data, labels = batch[b'data'], batch[label_key]
  row = int(np.prod(IMAGE_SHAPE))
  if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
    found = f'{data.dtype} {data.shape}' if isinstance(data, np.ndarray) else type(data).__name__
    raise ValueError(f"{path}: b'data' is {found}, expected a (N, {row}) uint8 array.")
  if data.shape[1] != row:
    raise ValueError(
        f"{path}: b'data' has shape {data.shape}, expected (N, {row}): 32x32 RGB rows."
    )
  try:
    labels = np.asarray(labels)
  except ValueError as e:
    raise ValueError(f'{path}: {label_key!r} is not a list of ints ({e}).') from e
  if labels.ndim != 1 or labels.dtype.kind not in 'iu' or len(labels) != len(data):
    raise ValueError(
        f'{path}: {label_key!r} is {labels.dtype} {labels.shape}, expected {len(data)} ints '
        f"(one per row of b'data')."
    )
  bad = (labels < 0) | (labels >= num_classes)
  if bad.any():
    raise ValueError(
        f'{path}: {int(bad.sum())} labels outside [0, {num_classes}) (the classes of the '
        f'meta file), e.g. {np.unique(labels[bad])[:5].tolist()}.'
    )
  c, h, w = IMAGE_SHAPE[2], IMAGE_SHAPE[0], IMAGE_SHAPE[1]
  images = data.reshape(len(data), c, h, w).transpose(0, 2, 3, 1)
  return images, labels.astype(np.int32)


def read_split(name: str, split: str, data_dir: str) -> dict:
  """One split of CIFAR-10/100 from the python-pickle folder.

  Args:
    name: 'cifar10' or 'cifar100' (fine labels).
    split: 'train' or 'test'.
    data_dir: the folder or its parent (see ``find_folder``).

  Returns:
    The fields of an ``ArrayDataset``: images (N, 32, 32, 3) uint8 (C
    contiguous), labels (N,) int32 in file order, num_classes, mean, std
    (``tfds_source.NORMALIZATION[name]``) and class_names.

  Raises:
    FileNotFoundError: the folder or one of its files is missing.
    RefusedGlobalError: a file names a global outside ``ALLOWED_GLOBALS``.
    ValueError: unknown split, or a file is truncated, corrupt or of the
      wrong shape.
  """
  folder = find_folder(name, data_dir)
  if split not in SPLIT_FILES[name]:
    raise ValueError(
        f'{_TITLES[name]} has no split {split!r}; valid: {sorted(SPLIT_FILES[name])} '
        '(data.val_per_class holds out a validation split).'
    )
  files = (META_FILES[name],) + SPLIT_FILES[name][split]
  missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
  if missing:
    raise FileNotFoundError(
        f'{_TITLES[name]}: {folder} lacks {", ".join(missing)} (expected '
        f'{", ".join(_expected(name))}); the download is incomplete. {_how_to_get(name)}'
    )
  meta_path = os.path.join(folder, META_FILES[name])
  meta = _bytes_keys(load_pickle(meta_path), meta_path)
  names_key = CLASS_NAME_KEYS[name]
  if names_key not in meta:
    raise ValueError(f'{meta_path} has no {names_key!r} (keys: {_sorted_keys(meta)}).')
  class_names = _names(meta[names_key], meta_path, names_key)
  parts = [
      _read_batch(os.path.join(folder, f), LABEL_KEYS[name], len(class_names))
      for f in SPLIT_FILES[name][split]
  ]
  images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
  labels = np.concatenate([p[1] for p in parts])
  mean, std = tfds_source.NORMALIZATION[name]
  return {
      'images': images,
      'labels': labels,
      'num_classes': len(class_names),
      'mean': tuple(mean),
      'std': tuple(std),
      'class_names': class_names,
  }
