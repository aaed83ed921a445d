"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file is a big-endian header -- two zero bytes, a type code, the number of
dimensions k, then k uint32 sizes -- followed by the array in C order.
"""

import gzip
import os
import zlib

import numpy as np

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (``.gz`` is decompressed) into a native-endian array.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is not a well-formed IDX file (the message names it).
  """
  path = os.fspath(path)
  opener = gzip.open if path.endswith('.gz') else open
  try:
    with opener(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:
    if isinstance(e, FileNotFoundError):
      raise
    raise ValueError(f'Cannot read IDX file {path}: {e}') from e
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise ValueError(f'{path} is not an IDX file (bad magic number).')
  dtype = _IDX_DTYPES[raw[2]]
  ndim = raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int(s) for s in np.frombuffer(raw, '>u4', ndim, offset=4))
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(raw) != expected:
    raise ValueError(
        f'{path} is truncated or corrupt: header says shape {shape} '
        f'({expected} bytes), file has {len(raw)} bytes.'
    )
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder('='))
