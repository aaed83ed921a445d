"""Tests for ltjax.data.idx: reading IDX files, plain and gzipped."""

import gzip

import numpy as np
import pytest

from ltjax.data import idx


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
