"""``gs://`` served from a local directory, offline: a stand-in bucket for tests.

Everything ltjax writes goes through ``ltjax.files`` (etils.epath, then
fsspec for ``gs://``) or orbax (etils.epath for its metadata, TensorStore's
``gcs`` driver for the arrays, and the Cloud Storage client for two queries).
The stand-in replaces exactly those bottom layers, nothing of ltjax:

  * fsspec's ``gs``/``gcs`` protocols: a file system rooted at ``root``
    (``gs://bucket/x`` is ``<root>/bucket/x``; listings come back as
    ``bucket/x``, as gcsfs returns them; a write replaces the file whole on
    close, as an object upload does);
  * orbax's TensorStore spec for a ``gs://`` path: the ``file`` driver under
    ``root``;
  * orbax's two Cloud Storage client calls (hierarchical-namespace query,
    recursive delete).

So a run on ``gs://bucket/run`` takes every ``gs://`` branch of ltjax, etils
and orbax, and its files can be inspected under ``root`` -- and a file that
went to the local disk instead (a folder named ``gs:``, a relative path) shows
up outside it.
"""

import contextlib
import importlib
import io
import os
import shutil
import sys
import uuid

from etils.epath import backend as epath_backend
import fsspec
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.implementations.local import LocalFileSystem
from orbax.checkpoint._src.path import gcs_utils

fsspec_registry = importlib.import_module(
    'fsspec.registry'
)  # The module (fsspec.registry is a mapping).
_SCHEMES = ('gs://', 'gcs://')


def _bucket_relative(path):
  if isinstance(path, (list, tuple)):
    return type(path)(_bucket_relative(p) for p in path)
  path = os.fspath(path)
  for scheme in _SCHEMES:
    if path.startswith(scheme):
      return path[len(scheme) :]
  return path


class _Upload(io.FileIO):
  """A file written like a Cloud Storage object: readers see the old one until close."""

  def __init__(self, path: str):
    self.final_path = path
    self.tmp = f'{path}.upload-{uuid.uuid4().hex}'
    super().__init__(self.tmp, 'wb')

  def close(self):
    if not self.closed:
      super().close()
      os.replace(self.tmp, self.final_path)


class _AtomicLocalFileSystem(LocalFileSystem):
  """Local files whose writes replace them whole, as an object store's uploads do."""

  def _open(self, path, mode='rb', *args, **kwargs):
    if 'w' not in mode:
      return super()._open(path, mode, *args, **kwargs)
    path = self._strip_protocol(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return _Upload(path)  # fsspec wraps it for text modes.


@contextlib.contextmanager
def fake_bucket(root: str):
  """Within the block, ``gs://`` paths live under the local directory ``root``."""
  os.makedirs(root, exist_ok=True)

  class _FakeGCS(DirFileSystem):
    protocol = ('gs', 'gcs')
    cachable = False

    def __init__(self, *args, **kwargs):
      del args, kwargs  # gcsfs options (finalize_on_close, ...).
      super().__init__(path=root, fs=_AtomicLocalFileSystem(auto_mkdir=True))

    def _join(self, path):
      return super()._join(_bucket_relative(path))

  def kvstore_for_gcs(path):
    bucket, key = gcs_utils.parse_gcs_path(path, add_trailing_slash=False)
    # An OCDBT base is a directory prefix: a trailing '/', as orbax gives local ones.
    caller = sys._getframe(1).f_code.co_name  # pylint: disable=protected-access
    slash = '/' if caller == '_build_ocdbt_kvstore_tspec' else ''
    return {'driver': 'file', 'path': os.path.join(root, bucket, key) + slash}

  def rmtree(path, *, missing_ok=False):
    local = os.path.join(root, _bucket_relative(str(path)))
    if os.path.exists(local) or not missing_ok:
      shutil.rmtree(local)

  saved = {
      name: getattr(gcs_utils, name)
      for name in ('get_kvstore_for_gcs', 'is_hierarchical_namespace_enabled', 'rmtree')
  }
  registry = {p: fsspec_registry._registry.get(p) for p in ('gs', 'gcs')}  # pylint: disable=protected-access
  for protocol in ('gs', 'gcs'):
    fsspec.register_implementation(protocol, _FakeGCS, clobber=True)
  gcs_utils.get_kvstore_for_gcs = kvstore_for_gcs
  gcs_utils.is_hierarchical_namespace_enabled = lambda path: False
  gcs_utils.rmtree = rmtree
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access
  try:
    yield root
  finally:
    for name, value in saved.items():
      setattr(gcs_utils, name, value)
    for protocol, cls in registry.items():
      if cls is None:
        fsspec_registry._registry.pop(protocol, None)  # pylint: disable=protected-access
      else:
        fsspec.register_implementation(protocol, cls, clobber=True)
    epath_backend.fsspec_backend._get_filesystem.cache_clear()  # pylint: disable=protected-access


def local_files(root: str) -> set[str]:
  """Every file under ``root``, relative to it."""
  return {os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names}
