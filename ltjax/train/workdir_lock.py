"""One writer per workdir: an exclusive lock held for the whole run.

Two processes training into one workdir would resume from each other's
in-flight checkpoints and end with a state that matches neither run. The lock
is ``fcntl.flock`` on ``<workdir>/.lock``, which the kernel releases when its
holder dies in any way (kill -9 included), so a lock left by a dead process is
never in force: the next run takes it and says whose it was. The file holds
the holder's host, pid and start time, which a refused run prints.

Only process 0 locks (on a pod every host runs the same command on one
workdir). Paths with a scheme (``gs://``) have no flock; they are not locked.
"""

import datetime
import fcntl
import json
import os
import socket

from absl import logging
import jax

from ltjax import files

LOCK_FILE = '.lock'


class WorkdirInUseError(RuntimeError):
  """Another live process holds the workdir's lock."""


class WorkdirLock:
  """Context manager: holds ``<workdir>/.lock`` exclusively, or raises WorkdirInUseError."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self) -> 'WorkdirLock':
    if files.is_remote(self.workdir) or jax.process_index() != 0:
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
      raise WorkdirInUseError(
          f'{self.workdir} is in use by another run: {holder}. Wait for it to finish (or stop '
          'it), or train into another --workdir. Nothing was written.'
      ) from None
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
    f.write(
        json.dumps(
            {
                'host': socket.gethostname(),
                'pid': os.getpid(),
                'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            }
        )
    )
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
