"""Tests for ltjax.data.cifar_pickle: CIFAR-10/100 from the python-pickle folders."""

import copyreg
import io
import os
import pickle
import struct

import numpy as np
import pytest

from helpers import requires_tfds
from helpers import synthetic_data_config
from ltjax import data
from ltjax.data import cifar_pickle

NAMES = {
    'cifar10': ('airplane', 'automobile', 'bird'),
    'cifar100': ('apple', 'aquarium_fish', 'baby'),
}
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


class Python2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes pickles as Python 2's cPickle wrote the official CIFAR files.

  Protocol 2; every bytes and str object is a Python 2 string (BINSTRING,
  loaded as bytes with ``encoding='bytes'``); ndarrays reduce to
  ``numpy.core.multiarray._reconstruct``, the name numpy < 2 used.
  """

  dispatch = pickle._Pickler.dispatch.copy()  # pylint: disable=protected-access

  def __init__(self, file):
    super().__init__(file, protocol=2)

  def save_py2_string(self, obj):
    raw = obj.encode('latin1') if isinstance(obj, str) else obj
    if len(raw) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
    self.memoize(obj)

  dispatch[bytes] = save_py2_string
  dispatch[str] = save_py2_string

  def save_global(self, obj, name=None):
    if obj is cifar_pickle._RECONSTRUCT:  # pylint: disable=protected-access
      self.write(pickle.GLOBAL + b'numpy.core.multiarray\n_reconstruct\n')
      self.memoize(obj)
    else:
      super().save_global(obj, name)


def dump(obj, path, protocol='py2'):
  if protocol == 'py2':
    buffer = io.BytesIO()
    Python2Pickler(buffer).dump(obj)
    payload = buffer.getvalue()
  else:
    payload = pickle.dumps(obj, protocol=protocol)
  with open(path, 'wb') as f:
    f.write(payload)


def make_arrays(seed=0):
  """{'train': (NHWC images, labels), 'test': ...}: 3 classes, labels interleaved."""
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, per_class in (('train', TRAIN_PER_CLASS), ('test', TEST_PER_CLASS)):
    labels = rng.permutation(np.repeat(np.arange(3), per_class))
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    arrays[split] = (images, labels)
  return arrays


def write_cifar(root, name, arrays, protocol='py2'):
  """The official folder of ``name`` under ``root`` with ``arrays``; returns the folder."""
  folder = os.path.join(root, cifar_pickle.FOLDERS[name])
  os.makedirs(folder)
  label_key = cifar_pickle.LABEL_KEYS[name]
  for split, (images, labels) in arrays.items():
    files = cifar_pickle.SPLIT_FILES[name][split]
    chunks = np.array_split(np.arange(len(labels)), len(files))
    for i, (file, chunk) in enumerate(zip(files, chunks)):
      batch = {
          b'batch_label': f'{split} batch {i + 1}'.encode(),
          label_key: [int(v) for v in labels[chunk]],  # Python ints, as the official lists.
          b'data': images[chunk].transpose(0, 3, 1, 2).reshape(len(chunk), -1),  # CHW rows.
          b'filenames': [f'img_{j}.png'.encode() for j in chunk],
      }
      if name == 'cifar100':
        batch[b'coarse_labels'] = [int(v) // 2 for v in labels[chunk]]
      dump(batch, os.path.join(folder, file), protocol)
  names = [n.encode() for n in NAMES[name]]
  meta = (
      {b'label_names': names, b'num_cases_per_batch': 10000, b'num_vis': 3072}
      if name == 'cifar10'
      else {b'fine_label_names': names, b'coarse_label_names': [b'fruit', b'fish']}
  )
  dump(meta, os.path.join(folder, cifar_pickle.META_FILES[name]), protocol)
  return folder


def pickle_config(name, data_dir, **overrides):
  return synthetic_data_config(name=name, data_dir=str(data_dir), **overrides)


def assert_same_source(a, b):
  """Same records, labels, classes and normalisation (any source type)."""
  assert len(a) == len(b)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert a.num_classes == b.num_classes and a.class_names == b.class_names
  assert a.mean == b.mean and a.std == b.std
  for i in range(len(a)):
    np.testing.assert_array_equal(a[i]['image'], b[i]['image'])
    assert a[i]['label'] == b[i]['label']


@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
@pytest.mark.parametrize('protocol', ['py2', 4, 5])
def test_reads_the_official_layout(tmp_path, name, protocol):
  arrays = make_arrays()
  folder = write_cifar(tmp_path, name, arrays, protocol)
  for data_dir in (tmp_path, folder, folder + '/'):  # The parent or the folder itself.
    for split, (images, labels) in arrays.items():
      source = data.load_split(pickle_config(name, data_dir), split)
      assert isinstance(source, data.ArrayDataset)
      assert source.images.dtype == np.uint8 and source.images.flags.c_contiguous
      assert source.labels.dtype == np.int32
      np.testing.assert_array_equal(source.images, images)
      np.testing.assert_array_equal(source.labels, labels)
      assert source.num_classes == 3 and source.class_names == NAMES[name]
      assert (source.mean, source.std) == data.tfds_source.NORMALIZATION[name]


def test_python2_pickle_matches_the_official_opcodes(tmp_path):
  """The stand-in is written as the official files are: Python 2 strings, numpy.core."""
  write_cifar(tmp_path, 'cifar10', make_arrays())
  with open(tmp_path / 'cifar-10-batches-py' / 'data_batch_1', 'rb') as f:
    payload = f.read()
  assert payload.startswith(b'\x80\x02}')
  assert b'cnumpy.core.multiarray\n_reconstruct\n' in payload and b'_codecs' not in payload
  assert b'U\x04data' in payload  # SHORT_BINSTRING 'data', a Python 2 str.


def test_channels_are_transposed_from_chw(tmp_path):
  folder = tmp_path / 'cifar-10-batches-py'
  folder.mkdir()
  row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.full(1024, 30)])
  row[1] = 99  # Red channel, row 0, column 1.
  for file in cifar_pickle.SPLIT_FILES['cifar10']['train']:
    dump({b'data': row[None].astype(np.uint8), b'labels': [0]}, folder / file)
  dump({b'label_names': [b'a']}, folder / 'batches.meta')
  fields = cifar_pickle.read_split('cifar10', 'train', str(tmp_path))
  assert fields['images'].shape == (5, 32, 32, 3)
  np.testing.assert_array_equal(fields['images'][0, 5, 7], [10, 20, 30])
  np.testing.assert_array_equal(fields['images'][0, 0, 1], [99, 20, 30])


@requires_tfds
@pytest.mark.parametrize('name', ['cifar10', 'cifar100'])
def test_same_data_as_the_tfds_source(tmp_path, name):
  """Same file order -> same images, labels, names, and the same long-tailed subsets."""
  arrays = make_arrays(seed=1)
  write_cifar(tmp_path / 'pickle', name, arrays)
  data.tfds_source.prepare_from_arrays(
      name, str(tmp_path / 'tfds'), arrays, class_names=NAMES[name]
  )
  settings = [
      {'imbalance_ratio': 0.0},
      {'imbalance_ratio': 5.0},
      {'imbalance_ratio': 5.0, 'selection': 'first', 'profile': 'step'},
      {'imbalance_ratio': 4.0, 'val_per_class': 2, 'subsample_seed': 3},
      {'imbalance_ratio': 3.0, 'open_classes': (1,)},
  ]
  for overrides in settings:
    tfds_splits = data.load_datasets(
        pickle_config('tfds', tmp_path / 'tfds', tfds_name=name, **overrides)
    )
    splits = data.load_datasets(pickle_config(name, tmp_path / 'pickle', **overrides))
    assert isinstance(splits.train, data.ArrayDataset)
    for field in ('train', 'val', 'test', 'open_test'):
      a, b = getattr(splits, field), getattr(tfds_splits, field)
      assert (a is None) == (b is None), (field, overrides)
      if a is not None:
        assert_same_source(a, b)
    np.testing.assert_array_equal(splits.train_counts, tfds_splits.train_counts)
    if overrides['imbalance_ratio']:
      assert splits.train_counts[0] == TRAIN_PER_CLASS - overrides.get('val_per_class', 0)
      assert len(splits.train) < len(arrays['train'][1])
  open_splits = data.load_datasets(pickle_config(name, tmp_path / 'pickle', open_classes=(1,)))
  assert open_splits.train.class_names == (NAMES[name][0], NAMES[name][2])
  assert len(open_splits.open_test) == TEST_PER_CLASS


class SystemCall:
  """Pickles to a call of os.system, the classic malicious pickle."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return (os.system, (self.command,))


class Harmless:
  """Any class outside the allow-list, even one that would load harmlessly."""

  def __init__(self):
    self.value = 1


def load_bytes(payload, tmp_path):
  path = tmp_path / 'data_batch_1'
  path.write_bytes(payload)
  return cifar_pickle.load_pickle(str(path))


@pytest.mark.parametrize('protocol', [0, 2, 4, 5])
def test_refuses_os_system_before_calling_it(tmp_path, protocol):
  marker = tmp_path / 'pwned'
  payload = pickle.dumps({'data': SystemCall(f'touch {marker}')}, protocol=protocol)
  with pytest.raises(cifar_pickle.RefusedGlobalError, match=r'data_batch_1.*refused.*system'):
    load_bytes(payload, tmp_path)
  assert not marker.exists()


def test_refuses_hand_written_global_opcodes(tmp_path):
  marker = tmp_path / 'pwned'
  for module in (b'os', b'posix', b'subprocess'):
    payload = b'c' + module + b"\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    with pytest.raises(cifar_pickle.RefusedGlobalError, match=module.decode() + r'\.system'):
      load_bytes(payload, tmp_path)
  payload = b"cbuiltins\neval\n(S'1+1'\ntR."
  with pytest.raises(cifar_pickle.RefusedGlobalError, match=r'builtins\.eval'):
    load_bytes(payload, tmp_path)
  assert not marker.exists()


def test_refuses_extension_registry_globals(tmp_path):
  """EXT opcodes (copyreg's extension registry) resolve through find_class too."""
  copyreg.add_extension(os.system.__module__, 'system', 240)
  try:
    payload = pickle.dumps(os.system, protocol=2)
  finally:
    copyreg.remove_extension(os.system.__module__, 'system', 240)
  assert payload == b'\x80\x02\x82\xf0.'  # EXT1 240.
  copyreg.add_extension(os.system.__module__, 'system', 240)
  try:
    with pytest.raises(cifar_pickle.RefusedGlobalError, match=r'\.system'):
      load_bytes(payload, tmp_path)
  finally:
    copyreg.remove_extension(os.system.__module__, 'system', 240)


@pytest.mark.parametrize(
    'obj, refused',
    [
        (Harmless(), r'test_cifar_pickle\.Harmless'),
        (np.float32(1.0), r'numpy\.\S*scalar'),  # A numpy global outside the allow-list.
        ({b'data': b'x'}, r'_codecs\.encode.*protocol 4'),  # Python 3 bytes, protocol 2.
    ],
)
def test_refuses_any_other_global(tmp_path, obj, refused):
  with pytest.raises(cifar_pickle.RefusedGlobalError, match=refused):
    load_bytes(pickle.dumps(obj, protocol=2), tmp_path)


def test_refused_global_fails_the_data_source_naming_the_file(tmp_path):
  folder = write_cifar(tmp_path, 'cifar10', make_arrays())
  with open(os.path.join(folder, 'data_batch_3'), 'wb') as f:
    pickle.dump({b'data': SystemCall('true')}, f)
  with pytest.raises(cifar_pickle.RefusedGlobalError, match=r'data_batch_3.*posix\.system'):
    data.load_datasets(pickle_config('cifar10', tmp_path))


def test_allowed_globals_resolve_to_numpy():
  for (module, name), obj in cifar_pickle.ALLOWED_GLOBALS.items():
    assert module.split('.')[0] == 'numpy' and obj.__name__ == name


def test_truncated_and_corrupt_files(tmp_path):
  folder = write_cifar(tmp_path, 'cifar10', make_arrays())
  path = os.path.join(folder, 'data_batch_2')
  with open(path, 'rb') as f:
    payload = f.read()
  config = pickle_config('cifar10', tmp_path)
  for broken in (payload[: len(payload) // 2], b'not a pickle at all', b''):
    with open(path, 'wb') as f:
      f.write(broken)
    with pytest.raises(ValueError, match=r'data_batch_2 is truncated or corrupt.*re-download'):
      data.load_split(config, 'train')
  with open(path, 'wb') as f:
    f.write(payload)
  data.load_split(config, 'train')


@pytest.mark.parametrize(
    'batch, message',
    [
        ({b'data': np.zeros((2, 3071), np.uint8), b'labels': [0, 1]}, r'\(2, 3071\)'),
        ({b'data': np.zeros((2, 3072), np.float32), b'labels': [0, 1]}, 'float32'),
        ({b'data': np.zeros((2, 3072), np.uint8), b'labels': [0]}, 'expected 2 ints'),
        ({b'data': np.zeros((2, 3072), np.uint8), b'labels': [0, 7]}, r'outside \[0, 3\)'),
        ({b'data': np.zeros((2, 3072), np.uint8)}, "no \\[b'labels'\\]"),
        ([1, 2], 'holds a list, expected a dict'),
    ],
)
def test_wrong_shapes(tmp_path, batch, message):
  folder = write_cifar(tmp_path, 'cifar10', make_arrays())
  dump(batch, os.path.join(folder, 'data_batch_4'))
  with pytest.raises(ValueError, match=r'data_batch_4.*' + message):
    data.load_split(pickle_config('cifar10', tmp_path), 'train')


def test_missing_folder_messages(tmp_path):
  how = r'torchvision\.datasets\.CIFAR10\(root, download=True\).*root/cifar-10-batches-py'
  with pytest.raises(FileNotFoundError, match=r'data_dir is empty.*' + how):
    data.load_split(pickle_config('cifar10', ''), 'train')
  missing = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match=rf'{missing} does not exist.*data_batch_1.*{how}'):
    data.load_split(pickle_config('cifar10', missing), 'train')
  with pytest.raises(FileNotFoundError, match=r'neither .* nor .*cifar-100-python.*CIFAR100'):
    data.load_split(pickle_config('cifar100', tmp_path), 'test')
  (tmp_path / 'cifar-10-python.tar.gz').write_bytes(b'')
  write_cifar(tmp_path / 'other', 'cifar100', make_arrays())
  with pytest.raises(FileNotFoundError, match=r'extract it there'):
    data.load_split(pickle_config('cifar10', tmp_path), 'train')
  with pytest.raises(FileNotFoundError, match=r"did you mean data.name='cifar100'"):
    data.load_split(pickle_config('cifar10', tmp_path / 'other'), 'train')
  archive = tmp_path / 'cifar-10-python.tar.gz'
  with pytest.raises(FileNotFoundError, match=r'is a file, not a directory.*tar xzf'):
    data.load_split(pickle_config('cifar10', archive), 'train')


def test_missing_file_messages(tmp_path):
  folder = write_cifar(tmp_path, 'cifar10', make_arrays())
  os.remove(os.path.join(folder, 'data_batch_3'))
  data.load_split(pickle_config('cifar10', tmp_path), 'test')  # The test split is complete.
  with pytest.raises(FileNotFoundError, match=r'lacks data_batch_3 \(expected data_batch_1.*'):
    data.load_split(pickle_config('cifar10', tmp_path), 'train')
  os.remove(os.path.join(folder, 'batches.meta'))
  with pytest.raises(FileNotFoundError, match=r'lacks batches.meta.*download=True'):
    data.load_split(pickle_config('cifar10', folder), 'test')
  with pytest.raises(ValueError, match=r"no split 'val'"):
    cifar_pickle.read_split('cifar10', 'val', folder)


def test_config_check_accepts_the_names():
  for name in ('cifar10', 'cifar100'):
    assert name in data.datasets.SOURCES


def test_a_refused_pickle_is_bad_input_naming_the_file(tmp_path):
  # The commands exit 2 (bad input) on a ValueError; the refusal, a pickle.UnpicklingError
  # only, ended them with 1 ("a bug").
  marker = tmp_path / 'pwned'
  payload = pickle.dumps({'data': SystemCall(f'touch {marker}')}, protocol=2)
  with pytest.raises(ValueError, match=r'data_batch_1: refused .*read as data, not code'):
    load_bytes(payload, tmp_path)
  assert not marker.exists()
  with pytest.raises(pickle.UnpicklingError):  # What it was, it still is.
    load_bytes(payload, tmp_path)


def test_keys_of_mixed_types_are_reported_not_sorted_into_a_type_error(tmp_path):
  folder = write_cifar(tmp_path, 'cifar10', make_arrays())
  dump({b'data': np.zeros((2, 3072), np.uint8), 7: 'x'}, os.path.join(folder, 'data_batch_4'))
  with pytest.raises(ValueError, match=r"data_batch_4 has no \[b'labels'\]"):
    data.load_split(pickle_config('cifar10', tmp_path), 'train')
