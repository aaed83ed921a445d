"""ImageNet-pretrained (or any torchvision-format) weights for ltjax's ResNets.

Users have torchvision ResNet / ResNeXt weights as a ``.safetensors`` file or
as the ``.pth`` / ``.pt`` file that ``torch.save(model.state_dict(), path)``
writes. :func:`read_state_dict` reads either into ``{name: numpy array}``
without torch:

* ``.safetensors`` with ``safetensors.numpy`` (the file's content decides, not
  its extension);
* a torch zip file (``torch.save``'s format since torch 1.6: ``<dir>/data.pkl``
  plus one raw storage per tensor under ``<dir>/data/<key>``) with
  :class:`RestrictedUnpickler`, which resolves only the globals a plain state
  dict pickles to (:data:`ALLOWED_GLOBALS`: ``collections.OrderedDict``,
  ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the typed
  storage classes ``torch.FloatStorage`` ... ``torch.BoolStorage``, all mapped
  to numpy stand-ins, never imported from torch). Any other global
  (``os.system``, a model class, ``argparse.Namespace``) raises
  :class:`RefusedGlobalError` naming the file and the global before anything
  runs. Legacy (non-zip) torch files and TorchScript archives are refused with
  how to re-save them.

A checkpoint dict that wraps the state dict under ``state_dict``, ``model`` or
``model_state_dict`` is unwrapped, and a ``module.`` prefix on every name
(``nn.DataParallel``) is removed.

:func:`load_torchvision` maps torchvision's names onto the parameter and
BatchNorm-statistics trees of :mod:`ltjax.models.resnet`:

  conv1 / bn1                       backbone/stem_conv / stem_bn
  layer{s}.{b}.conv{m} / bn{m}      backbone/stage{s}_block{b}/conv{m} / bn{m}
  layer{s}.{b}.downsample.0 / .1    backbone/stage{s}_block{b}/shortcut_conv / shortcut_bn
  fc.weight / fc.bias               head/kernel (transposed) / head/bias
  *.weight / *.bias (BN)            .../scale / .../bias (params)
  *.running_mean / *.running_var    .../mean / .../var (batch_stats)

Convolution kernels go from OIHW to HWIO (a grouped conv's (O, I/G, kh, kw)
to (kh, kw, I/G, O): both frameworks split the output channels into G
contiguous groups). ``num_batches_tracked`` is ignored. The classifier is
loaded only when ``head='auto'`` and ``fc.weight`` / ``fc.bias`` have the
head's shapes (e.g. an ImageNet fc into a 1000-class linear head); otherwise
the head keeps its fresh initialisation, which is logged. Every other
backbone tensor must be present with its exact shape and the file may hold
nothing else: one error lists every missing, extra and mis-shaped tensor
(torchvision name, expected shape, found shape). ``allow_missing`` /
``allow_extra`` relax this explicitly (API only; the config has no switch).

``config.model.pretrained`` (a local path or anything ``etils.epath`` opens)
applies this to a fresh stage-1 state (``ltjax.train.loop.initial_state``).
"""

import collections
import io
import logging as std_logging
import pickle
import os
import re
import zipfile
import zlib
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_dtypes  # Registers numpy's 'bfloat16' (safetensors and BFloat16Storage).
import numpy as np
import safetensors
from safetensors import numpy as safetensors_numpy

from ltjax import files
from ltjax.models import resnet
from ltjax.param_paths import named_leaves

HEAD_MODES = ('auto', 'skip')  # config.model.pretrained_head.

# The first bytes of a legacy (torch < 1.6 or _use_new_zipfile_serialization=False)
# file: a pickle (protocol 2) of torch's magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = b'\x80\x02\x8a\n\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19'


class RefusedGlobalError(pickle.UnpicklingError, ValueError):
  """A torch pickle named a global outside ``ALLOWED_GLOBALS``; nothing was called.

  A ValueError too: a refused file is bad input (the commands exit 2), not a bug.
  """


class PretrainedMismatchError(ValueError):
  """The file's tensors do not match the model (missing, extra or mis-shaped)."""


class _StorageType:
  """Stands in for ``torch.<X>Storage``: only its element dtype is used."""

  def __init__(self, name: str, dtype):
    self.name, self.dtype = name, np.dtype(dtype)

  def __repr__(self):
    return f'torch.{self.name}'


class _Storage:
  """One storage of the archive: its elements as a 1-D numpy array."""

  def __init__(self, array: np.ndarray):
    self.array = array


_STORAGE_DTYPES = {
    'DoubleStorage': np.float64,
    'FloatStorage': np.float32,
    'HalfStorage': np.float16,
    'BFloat16Storage': ml_dtypes.bfloat16,
    'LongStorage': np.int64,
    'IntStorage': np.int32,
    'ShortStorage': np.int16,
    'CharStorage': np.int8,
    'ByteStorage': np.uint8,
    'BoolStorage': np.bool_,
}


def _as_int_tuple(value, what: str) -> tuple[int, ...]:
  if not isinstance(value, tuple) or not all(
      isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
  ):
    raise pickle.UnpicklingError(f'bad tensor {what} {value!r}')
  return value


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None
):
  """``torch._utils._rebuild_tensor_v2`` on a numpy storage, bounds-checked."""
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, _Storage):
    raise pickle.UnpicklingError(f'tensor storage is {type(storage).__name__}, not a storage')
  (offset,) = _as_int_tuple((storage_offset,), 'offset')
  size, stride = _as_int_tuple(size, 'size'), _as_int_tuple(stride, 'stride')
  if len(size) != len(stride):
    raise pickle.UnpicklingError(f'tensor size {size} and stride {stride} differ in length')
  data = storage.array
  if 0 in size:
    return np.zeros(size, data.dtype)
  if np.prod(size, dtype=np.float64) > data.size:  # Only stride-0 expansions; never a state dict.
    raise pickle.UnpicklingError(f'tensor of size {size} is larger than its storage')
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= data.size:
    raise pickle.UnpicklingError(
        f'tensor of size {size}, stride {stride} at offset {offset} reads past its '
        f'storage of {data.size} elements'
    )
  return np.lib.stride_tricks.as_strided(
      data[offset:], size, tuple(s * data.itemsize for s in stride), writeable=False
  ).copy()


def _rebuild_parameter(data, requires_grad, backward_hooks):
  """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its tensor here."""
  del requires_grad, backward_hooks
  if not isinstance(data, np.ndarray):
    raise pickle.UnpicklingError(f'parameter data is {type(data).__name__}, not a tensor')
  return data


# The only globals a torch state-dict pickle may name (checked against torch 2.14's
# torch.save of a torchvision state_dict(), half / bfloat16 / int / bool tensors and
# nn.Parameters), each mapped to a numpy stand-in; torch is never imported.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    **{('torch', name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
  """Unpickles a torch zip archive's ``data.pkl`` into numpy arrays.

  Globals are resolved only through :data:`ALLOWED_GLOBALS`; anything else
  raises :class:`RefusedGlobalError` (naming the file and the global) before
  it is called. Persistent ids must be ``('storage', torch.<X>Storage, key,
  location, numel)`` and name a storage record of the archive.
  """

  def __init__(self, file, *, path: str, archive: zipfile.ZipFile, prefix: str, byteorder: str):
    super().__init__(file)
    self.path, self.archive, self.prefix, self.byteorder = path, archive, prefix, byteorder
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str):
    found = ALLOWED_GLOBALS.get((module, name))
    if found is None:
      raise RefusedGlobalError(
          f'{self.path}: refused to load the global {module}.{name}: a global would be called '
          'while loading, and weights are read as data, not code (nothing of the file ran; '
          'as torch.load(weights_only=True) refuses it). ltjax reads a plain state dict of '
          'tensors (dicts, lists, numbers, strings, tensors); allowed globals: '
          f'{sorted(f"{m}.{n}" for m, n in ALLOWED_GLOBALS)}. Save model.state_dict() '
          'alone, or convert the file to safetensors.'
      )
    return found

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise pickle.UnpicklingError(f'unsupported persistent id {pid!r}')
    _, storage_type, key, _, _ = pid
    if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
      raise pickle.UnpicklingError(f'unsupported storage {pid!r}')
    if key not in self.storages:
      record = f'{self.prefix}data/{key}'
      if record not in self.archive.namelist():
        raise pickle.UnpicklingError(f'missing storage record {record}')
      raw = _read_member(self.archive, record, self.path)
      dtype = storage_type.dtype.newbyteorder('<' if self.byteorder == 'little' else '>')
      if len(raw) % dtype.itemsize:
        raise pickle.UnpicklingError(f'storage {record} is not a whole number of {dtype}')
      self.storages[key] = _Storage(np.frombuffer(raw, dtype).astype(storage_type.dtype))
    return self.storages[key]


# What reading a damaged or unusual zip member raises besides BadZipFile (a bad CRC):
# a corrupt deflate stream, an unsupported compression method, an encrypted member.
_ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError)


def _read_member(archive: zipfile.ZipFile, name: str, path: str) -> bytes:
  """The bytes of ``name`` in ``archive``; a ValueError naming ``path`` if they cannot be read."""
  try:
    return archive.read(name)
  except _ZIP_MEMBER_ERRORS as e:
    raise ValueError(
        f'{path}: corrupt torch archive ({type(e).__name__} reading {name}: {e}); re-save or '
        're-download it.'
    ) from e


def _read_torch_zip(data: bytes, path: str):
  """The object ``torch.save`` pickled into the zip archive ``data``."""
  try:
    archive = zipfile.ZipFile(io.BytesIO(data))
  except zipfile.BadZipFile as e:
    raise ValueError(f'{path}: corrupt zip archive ({e}); re-save or re-download it.') from e
  names = archive.namelist()
  pickles = [n for n in names if n.endswith('data.pkl') and n.count('/') == 1]
  if len(pickles) != 1:
    what = (
        'a TorchScript archive (torch.jit.save)'
        if any(n.endswith('constants.pkl') for n in names)
        else 'not a torch.save archive'
    )
    raise ValueError(
        f'{path}: {what}; ltjax reads the state dict that torch.save(model.state_dict(), '
        'path) writes, or a .safetensors file.'
    )
  prefix = pickles[0][: -len('data.pkl')]
  byteorder = 'little'
  if f'{prefix}byteorder' in names:
    byteorder = _read_member(archive, f'{prefix}byteorder', path).decode(errors='replace').strip()
    if byteorder not in ('little', 'big'):
      raise ValueError(f'{path}: unknown byteorder record {byteorder!r}.')
  unpickler = RestrictedUnpickler(
      io.BytesIO(_read_member(archive, pickles[0], path)),
      path=path,
      archive=archive,
      prefix=prefix,
      byteorder=byteorder,
  )
  try:
    return unpickler.load()
  except RefusedGlobalError:
    raise
  except (
      pickle.UnpicklingError,
      zipfile.BadZipFile,
      EOFError,
      ValueError,
      TypeError,
      AttributeError,
      IndexError,
      KeyError,
      OverflowError,
      MemoryError,
  ) as e:
    raise ValueError(f'{path}: corrupt torch archive ({type(e).__name__}: {e}).') from e


def _unwrap(obj, path: str) -> dict[str, Any]:
  """The state dict inside ``obj``: itself, or a checkpoint's 'state_dict'/'model' entry."""
  if not isinstance(obj, dict):
    raise ValueError(f'{path} holds a {type(obj).__name__}, not a state dict.')
  if not any(isinstance(v, np.ndarray) for v in obj.values()):
    for key in ('state_dict', 'model_state_dict', 'model'):
      if isinstance(obj.get(key), dict):
        logging.info('%s: reading the state dict under %r.', path, key)
        obj = obj[key]
        break
  other = [k for k in obj if not isinstance(k, str)]
  if other:  # A state dict maps tensor names to tensors.
    raise ValueError(
        f'{path}: not a state dict, it has names that are not strings: {other[:5]!r}. Save '
        'model.state_dict(), or convert the file to safetensors.'
    )
  if obj and all(k.startswith('module.') for k in obj):
    obj = {k[len('module.') :]: v for k, v in obj.items()}
  return dict(obj)


def read_state_dict(path) -> dict[str, np.ndarray]:
  """``{torchvision name: numpy array}`` of a ``.safetensors`` or torch zip file; no torch.

  Args:
    path: a local path or anything ``etils.epath`` opens (``gs://...``).

  Raises:
    RefusedGlobalError: the torch pickle names a global outside ``ALLOWED_GLOBALS``.
    ValueError: a legacy torch file, a TorchScript archive, or not a weights file.
  """
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f'Pretrained weights {path} do not exist.')
  # A folder fails to open; a FIFO's open blocks until a writer comes (forever, for a run).
  if path.is_dir() or (not files.is_remote(str(path)) and not os.path.isfile(path)):
    raise ValueError(
        f'{path} is not a regular file: config.model.pretrained names a weights file '
        '(.safetensors, or the .pth / .pt of torch.save(model.state_dict(), path)).'
    )
  with path.open('rb') as f:
    magic = f.read(16)
  if magic.startswith(b'PK\x03\x04'):
    return _unwrap(_read_torch_zip(path.read_bytes(), str(path)), str(path))
  if magic.startswith(_LEGACY_MAGIC):
    raise ValueError(
        f"{path} is in torch's legacy (non-zip) format, which ltjax does not read. Re-save it "
        'with torch >= 1.6: torch.save(torch.load(old, weights_only=True), new), or convert '
        'it: safetensors.torch.save_file(torch.load(old, weights_only=True), new.safetensors).'
    )
  if magic[8:9] == b'{':  # safetensors: an 8-byte header length, then the JSON header.
    try:
      if '://' in str(path):
        return _unwrap(safetensors_numpy.load(path.read_bytes()), str(path))
      return _unwrap(safetensors_numpy.load_file(str(path)), str(path))
    # safetensors' numpy reader fails on a dtype numpy lacks with a KeyError or AttributeError.
    except (safetensors.SafetensorError, KeyError, AttributeError) as e:  # Bad input, not a bug.
      raise ValueError(
          f'{path}: corrupt safetensors file, or a dtype numpy lacks (such as float8) '
          f'({type(e).__name__}: {e}); re-save or re-download it, in float32, float16 or '
          'bfloat16.'
      ) from e
  raise ValueError(
      f'{path} is neither a .safetensors file nor a torch.save zip archive (first bytes '
      f'{magic!r}).'
  )


# ltjax module path (under backbone/) -> torchvision module name.
_MODULE_NAMES = (
    (re.compile(r'stem_conv'), 'conv1'),
    (re.compile(r'stem_bn'), 'bn1'),
    (re.compile(r'stage(\d+)_block(\d+)/(conv|bn)(\d+)'), r'layer\1.\2.\3\4'),
    (re.compile(r'stage(\d+)_block(\d+)/shortcut_conv'), r'layer\1.\2.downsample.0'),
    (re.compile(r'stage(\d+)_block(\d+)/shortcut_bn'), r'layer\1.\2.downsample.1'),
)
# (collection, leaf name) -> torchvision tensor name suffix.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_HEAD_NAMES = {'head/kernel': 'fc.weight', 'head/bias': 'fc.bias'}


def torchvision_name(collection: str, path: str) -> str | None:
  """torchvision's name of the ltjax leaf ``path`` ('backbone/stem_conv/kernel' -> 'conv1.weight').

  None for a leaf without one (e.g. LWS's head/scale).
  """
  if path in _HEAD_NAMES:
    return _HEAD_NAMES[path] if collection == 'params' else None
  if not path.startswith('backbone/'):
    return None
  module, _, leaf = path[len('backbone/') :].rpartition('/')
  suffix = _LEAF_NAMES.get((collection, leaf))
  for pattern, name in _MODULE_NAMES:
    if suffix and pattern.fullmatch(module):
      return f'{pattern.sub(name, module)}.{suffix}'
  return None


def to_torch_layout(array: np.ndarray, torch_name: str) -> np.ndarray:
  """An ltjax leaf in torchvision's layout (HWIO -> OIHW; (d, C) -> (C, d) for fc)."""
  if array.ndim == 4:
    return np.transpose(array, (3, 2, 0, 1))
  if torch_name == 'fc.weight':
    return array.T
  return array


def from_torch_layout(array: np.ndarray, torch_name: str) -> np.ndarray:
  """A torchvision tensor in ltjax's layout (OIHW -> HWIO; (C, d) -> (d, C) for fc)."""
  if array.ndim == 4:
    return np.transpose(array, (2, 3, 1, 0))
  if torch_name == 'fc.weight':
    return array.T
  return array


def _torch_shape(shape: tuple[int, ...], torch_name: str) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if torch_name == 'fc.weight':
    return tuple(reversed(shape))
  return tuple(shape)


def describe_architecture(state_dict: dict[str, np.ndarray]) -> str:
  """What torchvision ResNet the names and shapes of ``state_dict`` look like."""
  blocks = collections.defaultdict(set)
  for name in state_dict:
    m = re.match(r'layer(\d+)\.(\d+)\.', name)
    if m:
      blocks[int(m.group(1))].add(int(m.group(2)))
  if not blocks:
    return 'no torchvision ResNet layers'
  sizes = tuple(len(blocks[s]) for s in sorted(blocks))
  bottleneck = 'layer1.0.conv3.weight' in state_dict
  conv2 = state_dict.get('layer1.0.conv2.weight')
  groups = conv2.shape[0] // conv2.shape[1] if conv2 is not None and conv2.ndim == 4 else 1
  known = {
      (False, (1, 1, 1, 1), 1): 'resnet10',
      (True, (3, 4, 6, 3), 1): 'resnet50',
      (True, (3, 8, 36, 3), 1): 'resnet152',
      (True, (3, 4, 6, 3), 32): 'resnext50_32x4d',
  }
  name = known.get((bottleneck, sizes, groups))
  kind = f'{"Bottleneck" if bottleneck else "BasicBlock"} {list(sizes)}, {groups} group(s)'
  return f'{kind} (model.name={name!r})' if name else kind


def _listing(title: str, rows: list[str], limit: int = 30) -> str:
  more = f'\n    ... and {len(rows) - limit} more' if len(rows) > limit else ''
  return f'  {title} ({len(rows)}):\n    ' + '\n    '.join(rows[:limit]) + more


def _place(array: np.ndarray, like) -> Any:
  """``array`` as a leaf like ``like``: its dtype, and its sharding for a jax.Array."""
  array = np.asarray(array, dtype=like.dtype)
  if isinstance(like, jax.Array):
    return jax.make_array_from_callback(array.shape, like.sharding, lambda index: array[index])
  return array


def load_torchvision(
    params,
    batch_stats,
    state_dict: dict[str, np.ndarray],
    *,
    head: str = 'auto',
    allow_missing: bool = False,
    allow_extra: bool = False,
    source: str = 'the state dict',
) -> tuple[Any, Any, dict]:
  """``params`` / ``batch_stats`` with the torchvision tensors of ``state_dict`` in place.

  Args:
    params: the model's parameters ({'backbone': ..., 'head': ...}).
    batch_stats: its BatchNorm statistics.
    state_dict: ``{torchvision name: array}`` (``read_state_dict``).
    head: 'auto' loads fc.weight / fc.bias into head/kernel / head/bias when
      their shapes match (else the fresh head is kept); 'skip' keeps the fresh head.
    allow_missing: keep the fresh value of backbone tensors the file lacks
      (listed in the summary) instead of failing.
    allow_extra: ignore tensors of the file that the model has no place for.
    source: the file, for messages.

  Returns:
    ``(params, batch_stats, summary)``; the leaves keep their dtypes and
    shardings. ``summary``: 'loaded' (count), 'values' (number of loaded
    values), 'head' ('loaded' or why it was kept fresh), 'missing', 'ignored'.

  Raises:
    PretrainedMismatchError: listing every missing, extra and mis-shaped tensor.
  """
  if head not in HEAD_MODES:
    raise ValueError(f'Unknown head mode {head!r}; valid: {list(HEAD_MODES)}.')
  trees = {'params': params, 'batch_stats': batch_stats}
  leaves = {c: named_leaves(t) for c, t in trees.items()}
  targets = {}  # torchvision name -> (collection, ltjax path, leaf).
  for collection, named in leaves.items():
    for path, leaf in named:
      name = torchvision_name(collection, path)
      if name is not None:
        targets[name] = (collection, path, leaf)
  if not any(path.startswith('backbone/') for _, path, _ in targets.values()):
    raise ValueError(
        f'{source}: the model has no torchvision-named backbone parameters; torchvision '
        f'weights load into the ResNets of ltjax.models.resnet ({sorted(resnet.BACKBONES)}).'
    )
  state_dict = {
      k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')
  }  # BN's step counter: momentum is fixed, so it is unused.

  head_names = [n for n in _HEAD_NAMES.values() if n in targets]
  head_status = 'loaded'
  if head == 'skip':
    head_status = "kept fresh (model.pretrained_head='skip')"
  elif 'fc.weight' not in targets:
    head_status = 'kept fresh (the head has no kernel)'
  else:
    problems = []
    for name in head_names:
      expected = _torch_shape(targets[name][2].shape, name)
      found = state_dict.get(name)
      if found is None:
        problems.append(f'{name} absent')
      # Not a tensor at all: no shape to compare; listed as mis-shaped below.
      elif isinstance(found, np.ndarray) and tuple(found.shape) != expected:
        problems.append(f'{name} {tuple(found.shape)} vs {expected} expected')
    if problems:
      head_status = f'kept fresh ({", ".join(problems)})'
  load_head = head_status == 'loaded'

  missing, wrong, values = [], [], {}
  for name, (collection, path, leaf) in targets.items():
    is_head = name in _HEAD_NAMES.values()
    if is_head and not load_head:
      continue
    expected = _torch_shape(leaf.shape, name)
    found = state_dict.get(name)
    if found is None:
      missing.append(f'{name}: expected {expected} (ltjax {collection} {path})')
    elif not isinstance(found, np.ndarray) or tuple(found.shape) != expected:
      shape = tuple(found.shape) if isinstance(found, np.ndarray) else type(found).__name__
      wrong.append(f'{name}: expected {expected} (ltjax {collection} {path}), found {shape}')
    else:
      values[(collection, path)] = from_torch_layout(found, name)
  extra = [
      f'{name}: found {tuple(v.shape) if isinstance(v, np.ndarray) else type(v).__name__}'
      for name, v in state_dict.items()
      if name not in targets and name not in _HEAD_NAMES.values()
  ]
  errors = list(wrong)
  if missing and not allow_missing:
    errors += missing
  if extra and not allow_extra:
    errors += extra
  if errors:
    parts = []
    if wrong:
      parts.append(_listing('mis-shaped (name: expected, found)', wrong))
    if missing and not allow_missing:
      parts.append(_listing('missing from the file', missing))
    if extra and not allow_extra:
      parts.append(_listing('in the file but not in the model', extra))
    raise PretrainedMismatchError(
        f'{source} does not fit the model: {len(errors)} tensor(s) differ. The file looks like '
        f'a torchvision {describe_architecture(state_dict)}.\n' + '\n'.join(parts)
    )

  def fill(collection, tree):
    new = [
        _place(values[(collection, path)], leaf) if (collection, path) in values else leaf
        for path, leaf in leaves[collection]
    ]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(tree), new)

  summary = {
      'loaded': len(values),
      'values': int(sum(v.size for v in values.values())),
      'head': head_status,
      'missing': missing,
      'ignored': extra,
  }
  return fill('params', params), fill('batch_stats', batch_stats), summary


def load_pretrained(
    path,
    params,
    batch_stats,
    *,
    model_name: str,
    head: str = 'auto',
    allow_missing: bool = False,
    allow_extra: bool = False,
) -> tuple[Any, Any, dict]:
  """Reads ``path`` (``read_state_dict``) and loads it (``load_torchvision``); logs what.

  ``model_name`` must be a key of ``ltjax.models.resnet.BACKBONES``.
  """
  if model_name not in resnet.BACKBONES:
    raise ValueError(
        f'model.pretrained loads torchvision ResNet weights; model.name {model_name!r} is not '
        f'one of them ({sorted(resnet.BACKBONES)}).'
    )
  state_dict = read_state_dict(path)
  params, batch_stats, summary = load_torchvision(
      params,
      batch_stats,
      state_dict,
      head=head,
      allow_missing=allow_missing,
      allow_extra=allow_extra,
      source=str(path),
  )
  level = std_logging.WARNING if summary['missing'] or summary['ignored'] else std_logging.INFO
  logging.log(
      level,
      'Pretrained %s: loaded %d tensors (%d values) from %s; head %s%s%s.',
      model_name,
      summary['loaded'],
      summary['values'],
      path,
      summary['head'],
      f'; kept fresh (allow_missing): {summary["missing"]}' if summary['missing'] else '',
      f'; ignored (allow_extra): {summary["ignored"]}' if summary['ignored'] else '',
  )
  return params, batch_stats, summary
