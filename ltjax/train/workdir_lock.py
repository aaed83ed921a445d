"""One writer per workdir: an exclusive lock held for the whole run.

Two processes training into one workdir would resume from each other's
in-flight checkpoints and end with a state that matches neither run. The lock
is ``fcntl.flock`` on ``<workdir>/.lock``, which the kernel releases when its
holder dies in any way (kill -9 included), so a lock left by a dead process is
never in force: the next run takes it and says whose it was. The file holds
the holder's host, pid and start time, which a refused run prints.

Only process 0 locks (on a pod every host runs the same command on one
workdir).

A workdir in a bucket (``gs://``) has no flock and no process that dies with
its holder, so its lock is a lease (``RemoteWorkdirLock``): ``.lock`` holds the
holder, a random token and when the lease was last renewed; a thread renews it
every ``RENEW_SECONDS``. A lease not renewed for ``LEASE_SECONDS`` belongs to a
dead holder (a lost VM) and is taken over. Two runs that start at the same time
both write the object; the store keeps the last, and each reads it back after
``SETTLE_SECONDS``: only the one whose token is there goes on.
"""

import datetime
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import jax

from ltjax import files

LOCK_FILE = '.lock'
LEASE_SECONDS = 180.0  # A remote lease older than this is a dead holder's.
RENEW_SECONDS = 30.0
SETTLE_SECONDS = 2.0  # Read-back delay that settles two simultaneous starts.


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


def _holder() -> dict:
  return {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
  }


def _in_use(workdir: str, holder: str) -> WorkdirInUseError:
  return WorkdirInUseError(
      f'{workdir} is in use by another run: {holder}. Wait for it to finish (or stop '
      'it), or train into another --workdir. Nothing was written.'
  )


def workdir_lock(workdir: str):
  """The lock for ``workdir``: a flock locally, a renewed lease in a bucket."""
  return RemoteWorkdirLock(workdir) if files.is_remote(workdir) else WorkdirLock(workdir)


class WorkdirLock:
  """Context manager: holds ``<workdir>/.lock`` exclusively, or raises WorkdirInUseError."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self) -> 'WorkdirLock':
    if jax.process_index() != 0:
      return self
    try:
      os.makedirs(self.workdir, exist_ok=True)
      f = open(self.path, 'a+', encoding='utf-8')
    except OSError as e:
      raise PermissionError(
          f'Cannot write to the workdir {self.workdir} ({e}); pass a writable --workdir.'
      ) from e
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or '(unknown)'
      f.close()
      raise _in_use(self.workdir, holder) from None
    f.seek(0)
    previous = f.read().strip()
    if previous:
      logging.warning(
          'Taking over %s: its previous holder %s ended without releasing it.',
          self.workdir,
          previous,
      )
    f.seek(0)
    f.truncate()
    f.write(json.dumps(_holder()))
    f.flush()
    self._file = f
    return self

  def __exit__(self, *exc) -> None:
    if self._file is None:
      return
    # Empty the file first: a non-empty lock file means its holder ended without this.
    self._file.seek(0)
    self._file.truncate()
    self._file.flush()
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    self._file = None


class RemoteWorkdirLock:
  """Context manager: a renewed lease on ``<workdir>/.lock`` in a bucket (module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = files.join(workdir, LOCK_FILE)
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread = None

  def _read(self) -> dict | None:
    try:
      return json.loads(files.read_text(self.path)) if files.exists(self.path) else None
    except (OSError, ValueError):
      return None  # Torn or foreign content: no live lease.

  def _write(self) -> None:
    files.write_json(self.path, {**self.holder, 'token': self.token, 'renewed': time.time()})

  def __enter__(self) -> 'RemoteWorkdirLock':
    if jax.process_index() != 0:
      return self
    self.holder = _holder()
    current = self._read()
    if current is not None:
      age = time.time() - float(current.get('renewed', 0))
      shown = {k: current.get(k) for k in ('host', 'pid', 'since')}
      if age < LEASE_SECONDS:
        raise _in_use(self.workdir, f'{shown}, lease renewed {age:.0f} s ago')
      logging.warning(
          'Taking over %s: the lease of %s was last renewed %.0f s ago (its holder is gone).',
          self.workdir,
          shown,
          age,
      )
    try:
      files.makedirs(self.workdir)
      self._write()
    except OSError as e:
      raise PermissionError(
          f'Cannot write to the workdir {self.workdir} ({e}); pass a writable --workdir.'
      ) from e
    time.sleep(SETTLE_SECONDS)
    current = self._read()
    if current is None or current.get('token') != self.token:
      shown = {k: (current or {}).get(k) for k in ('host', 'pid', 'since')}
      raise _in_use(self.workdir, f'{shown}, which started at the same time')
    self._thread = threading.Thread(target=self._renew, daemon=True, name='workdir-lease')
    self._thread.start()
    return self

  def _renew(self) -> None:
    while not self._stop.wait(RENEW_SECONDS):
      current = self._read()
      if current is not None and current.get('token') != self.token:
        logging.error(
            'The lease on %s was taken over by %s while this run held it (renewals stalled '
            'for over %.0f s); stop one of the two runs.',
            self.workdir,
            {k: current.get(k) for k in ('host', 'pid', 'since')},
            LEASE_SECONDS,
        )
        return
      try:
        self._write()
      except OSError as e:  # A transient store error: the next renewal retries.
        logging.warning('Renewing the lease on %s failed: %s', self.workdir, e)

  def __exit__(self, *exc) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    current = self._read()
    if current is not None and current.get('token') == self.token:
      files.remove(self.path)
