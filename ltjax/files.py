"""Every file a run or an evaluation reads or writes, local or in a bucket.

A workdir, a data list or a weights file may be a local path or a URL of a
remote file system (``gs://bucket/run``, ``s3://...``). All of ltjax's file
I/O goes through this module, which hands remote paths to ``etils.epath`` (the
path API orbax and TFDS use; ``pip install ltjax[gcs]`` adds what it needs for
``gs://``) and keeps local paths on the plain ``os`` calls. A remote path is
never turned into a local one: ``os.path.abspath('gs://b/run')`` would be
``<cwd>/gs:/b/run``, a local folder that vanishes with the VM.

Remote object stores have neither renames that are atomic nor appends, so:
  * ``write_text``/``write_bytes`` are atomic on both (a local file through a
    temporary file and ``os.replace``; an object, which a store replaces whole);
  * append-only logs (``metrics.jsonl``, TensorBoard event files) are rewritten
    whole on a remote path (ltjax.train.writer).
"""

import io
import json
import os
import posixpath
import shutil
from typing import Any

from etils import epath
from etils.epath import backend as epath_backend

PathLike = str | os.PathLike


def is_remote(path: PathLike) -> bool:
  """A URL of a remote file system (``gs://``, ``s3://``, ...), not a local path."""
  return '://' in os.fspath(path)


def absolute(path: PathLike) -> str:
  """A local path made absolute (orbax needs it); a remote URL unchanged."""
  path = os.fspath(path)
  return path if is_remote(path) else os.path.abspath(path)


def join(path: PathLike, *parts: str) -> str:
  """``os.path.join`` that keeps a URL a URL (``gs://b/run`` + ``x`` -> ``gs://b/run/x``)."""
  return (
      os.fspath(epath.Path(path).joinpath(*parts))
      if is_remote(path)
      else os.path.join(path, *parts)
  )


def normpath(path: PathLike) -> str:
  """``os.path.normpath`` that keeps a URL's ``scheme://`` (``gs://b/x/../y`` -> ``gs://b/y``)."""
  path = os.fspath(path)
  if not is_remote(path):
    return os.path.normpath(path)
  scheme, rest = path.split('://', 1)
  return f'{scheme}://{posixpath.normpath(rest)}'


def refresh(path: PathLike) -> None:
  """Forgets the remote listings cached around ``path``, so the next call asks the store.

  gcsfs answers from its cache of a listed folder: an object written there by
  another client (TensorStore, another host) is "not found" until then.
  """
  if not is_remote(path):
    return
  # Only fsspec caches; epath uses tf.io.gfile instead where TensorFlow is installed.
  backend = getattr(epath.Path(path), '_backend', epath_backend.fsspec_backend)
  if backend is epath_backend.fsspec_backend:
    backend.fs(os.fspath(path)).invalidate_cache(os.fspath(path))


def exists(path: PathLike) -> bool:
  return epath.Path(path).exists() if is_remote(path) else os.path.exists(path)


def isfile(path: PathLike) -> bool:
  return epath.Path(path).is_file() if is_remote(path) else os.path.isfile(path)


def isdir(path: PathLike) -> bool:
  return epath.Path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def makedirs(path: PathLike) -> None:
  """Creates a directory and its parents (a no-op on stores without directories)."""
  if is_remote(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: PathLike) -> list[str]:
  """The names in a directory, sorted."""
  if is_remote(path):
    return sorted(p.name for p in epath.Path(path).iterdir())
  return sorted(os.listdir(path))


def open_file(path: PathLike, mode: str = 'r'):
  """``open`` for reading (or streaming a large write) on any path."""
  if is_remote(path):
    return epath.Path(path).open(mode)
  return open(path, mode)


def read_text(path: PathLike) -> str:
  with open_file(path, 'r') as f:
    return f.read()


def read_bytes(path: PathLike) -> bytes:
  with open_file(path, 'rb') as f:
    return f.read()


def write_bytes(path: PathLike, data: bytes) -> None:
  """Writes a whole file atomically: a reader sees the old content or the new, never half."""
  if is_remote(path):
    epath.Path(path).write_bytes(data)
    return
  tmp = f'{path}.tmp'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: PathLike, text: str) -> None:
  write_bytes(path, text.encode('utf-8'))


class DamagedFileError(ValueError):
  """A file that is there but cannot be parsed; the message names it, the problem and the fix."""


_RESTORE = 'Restore it from a copy.'


def decode_utf8(path: PathLike, data: bytes, fix: str = _RESTORE) -> str:
  """``data``, the bytes of ``path``, as text; DamagedFileError naming the byte and ``fix``."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    near = data[max(e.start - 20, 0) : e.start + 20]
    raise DamagedFileError(
        f'{os.fspath(path)} is not UTF-8 at byte {e.start} (line {line}): {near!r}. {fix}'
    ) from e


def read_json(path: PathLike, *, fix: str = _RESTORE) -> Any:
  """The JSON value in ``path``; a damaged file raises DamagedFileError naming it and ``fix``."""
  text = decode_utf8(path, read_bytes(path), fix)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DamagedFileError(
        f'{os.fspath(path)} is not JSON: {e.msg} at line {e.lineno} column {e.colno}. {fix}'
    ) from e


def write_json(path: PathLike, value: Any, **dumps_kwargs) -> None:
  write_text(path, json.dumps(value, **dumps_kwargs))


def remove(path: PathLike) -> None:
  """Deletes a file if it exists."""
  if is_remote(path):
    epath.Path(path).unlink(missing_ok=True)
  elif os.path.exists(path):
    os.remove(path)


def rmtree(path: PathLike) -> None:
  """Deletes a directory tree (every object under the prefix in a bucket)."""
  if is_remote(path):
    epath.Path(path).rmtree(missing_ok=True)
  elif os.path.exists(path):
    shutil.rmtree(path)


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or directory tree to ``dst`` (a new path; its parents are created).

  Locally a rename. A bucket has no renames: the objects are copied, then the
  source deleted, so an interrupted move leaves the source whole.
  """
  if not is_remote(src) and not is_remote(dst):
    os.makedirs(os.path.dirname(os.fspath(dst)) or '.', exist_ok=True)
    shutil.move(os.fspath(src), os.fspath(dst))
    return
  if isdir(src):
    copytree(src, dst)
    rmtree(src)
  else:
    write_bytes(dst, read_bytes(src))
    remove(src)


def copytree(src: PathLike, dst: PathLike) -> None:
  """Copies a directory tree into ``dst`` (merged into what is there), between any paths."""
  if not is_remote(src) and not is_remote(dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return
  makedirs(dst)
  for name in listdir(src):
    source, target = join(src, name), join(dst, name)
    if isdir(source):
      copytree(source, target)
    else:
      write_bytes(target, read_bytes(source))


def save_figure(fig, path: PathLike, **savefig_kwargs) -> str:
  """Saves a matplotlib figure to any path (the format from its suffix); returns the path."""
  buffer = io.BytesIO()
  fmt = os.path.splitext(os.fspath(path))[1].lstrip('.') or 'png'
  fig.savefig(buffer, format=fmt, **savefig_kwargs)
  write_bytes(path, buffer.getvalue())
  return os.fspath(path)
