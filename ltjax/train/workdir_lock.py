"""One writer per workdir: an exclusive lock held for the whole run.

Two processes training into one workdir would resume from each other's
in-flight checkpoints and end with a state that matches neither run. A run
that finds the workdir held raises ``WorkdirBusyError`` (naming the holder,
and when the workdir frees up): a retryable condition, not bad input.

Only process 0 locks (on a pod every host runs the same command on one
workdir).

A local workdir (``WorkdirLock``) is locked with ``fcntl.flock``, which the
kernel releases when its holder dies in any way (kill -9 included), so a lock
left by a dead process is never in force: the next run takes it and says whose
it was. The lock is on the workdir folder itself and on ``<workdir>/.lock``,
which holds the holder's host, pid and start time for the messages (and is the
lock older versions of ltjax take).

A workdir in a bucket (``gs://``) has no flock and no process that dies with
its holder, so its lock is a lease (``RemoteWorkdirLock``): ``.lock`` holds the
holder, a random token and when the lease was last renewed; a thread renews it
every ``RENEW_SECONDS``. A lease not renewed for ``LEASE_SECONDS`` belongs to a
dead holder (a lost VM) and is taken over; so is, at once, a lease whose holder
ran on this machine (same host, kernel boot and pid namespace) and whose
process is gone (a rerun after a kill need not wait). Two runs that start at
the same time both write the object; the store keeps the last, and each reads
it back after ``SETTLE_SECONDS``: only the one whose token is there goes on.

A ``.lock`` that cannot be read (not UTF-8, not JSON, no lease in it) is a dead
holder's: it is taken over with a warning naming the file.

What is guaranteed when ``.lock`` is deleted or replaced while a run holds it
(a holder learns that its lock is gone from ``lost`` / ``check()``, which the
training loop calls before each checkpoint save; ``check_held()`` checks every
lock this process holds):

  * Local: a second run on the workdir is refused as long as the first lives,
    whatever happens to ``.lock``: the flock is on the folder's inode, which
    cannot be swapped while it holds files (the first run's ``check()`` puts a
    deleted ``.lock`` back). Not closed: the folder itself deleted or renamed
    and created again (``rm -rf``): a second run in the new folder is not
    refused, and the first stops at its next ``check()`` (the path names
    another folder). On a file system where a folder cannot be flocked (NFS),
    only ``.lock`` is locked: a second run started after its deletion goes on,
    and the first stops at its next ``check()``.
  * Bucket: an object store has no fencing, so a second run started after a
    deletion is not refused. The first run learns that its lease is gone or
    names another run at its next renewal (then never writes the lease again)
    and at its next ``check()``, which reads the lease back: a checkpoint save
    starts only when the lease read just before it names this run, and the
    second run writes nothing until its lease settled and its preflight
    passed. Not closed: a save already under way when the second run took the
    lease (they overlap if the save outlasts the second run's start-up), and
    files other than checkpoints written between two checks (metrics rows).
"""

import datetime
import fcntl
import json
import math
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
_SHOWN = ('host', 'pid', 'since')  # What a message shows of a holder.
_RETRIES = 5  # Attempts at locking a .lock that keeps being replaced.


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir: retry when it has ended (or its lease expired).

  ``workdir`` is the workdir, ``holder`` a short description of the holder.
  """

  def __init__(self, message: str, *, workdir: str = '', holder: str = ''):
    super().__init__(message)
    self.workdir = workdir
    self.holder = holder


WorkdirInUseError = WorkdirBusyError  # Its former name.


class WorkdirLostError(WorkdirBusyError):
  """This run's lock was removed or taken while it ran: it must stop writing to the workdir."""


_HELD = []  # The locks this process holds now (check_held).


def check_held() -> None:
  """Raises WorkdirLostError if a lock this process holds was lost (call before each save)."""
  for lock in list(_HELD):
    lock.check()


def _machine() -> dict:
  """What makes a pid name one process: this kernel's boot and pid namespace (Linux only)."""
  try:
    with open('/proc/sys/kernel/random/boot_id', encoding='ascii') as f:
      return {'boot': f.read().strip(), 'pidns': os.readlink('/proc/self/ns/pid')}
  except OSError:
    return {}


def _process_state(pid: int) -> tuple[str, str] | None:
  """Process ``pid``'s state letter and start time (clock ticks since boot); None if unreadable."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      stat = f.read()
  except OSError:
    return None
  # The command name (field 2) may hold spaces and ')': count from the last ')'.
  fields = stat[stat.rindex(b')') + 2 :].split()
  return fields[0].decode(), fields[19].decode()


def _holder() -> dict:
  return {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'since': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      **_machine(),
      'start': (_process_state(os.getpid()) or ('', None))[1],
  }


def _gone(holder: dict) -> bool:
  """Whether ``holder`` certainly ended: a process of this machine's pid namespace, not here now.

  Only then: a pid of another machine or container says nothing here, and a process this one
  cannot inspect counts as alive.
  """
  machine = _machine()
  if not machine or holder.get('host') != socket.gethostname():
    return False
  if any(holder.get(key) != value for key, value in machine.items()):
    return False
  pid = holder.get('pid')
  if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
    return False
  try:
    os.kill(pid, 0)  # Unlike /proc, not hidden from other users (hidepid).
  except ProcessLookupError:
    return True
  except OSError:
    pass  # Another user's process: it exists.
  state = _process_state(pid)
  if state is None or holder.get('start') is None:
    return False
  return state[0] == 'Z' or state[1] != holder['start']  # A zombie, or the pid reused.


def _show(holder: dict) -> str:
  return json.dumps({key: holder.get(key) for key in _SHOWN})


def _parse(raw: bytes, *, lease: bool) -> tuple[dict | None, str | None]:
  """A holder record: (record, None), or (None, why it is unreadable)."""
  excerpt = repr(raw[:60]) + ('...' if len(raw) > 60 else '')
  try:
    record = json.loads(raw.decode('utf-8'))
  except ValueError:  # UnicodeDecodeError included.
    return None, f'{excerpt} is not JSON text'
  if not isinstance(record, dict):
    return None, f'{excerpt} is not a JSON object'
  if lease:
    renewed = record.get('renewed')
    if not isinstance(record.get('token'), str) or not isinstance(renewed, (int, float)):
      return None, f'{excerpt} has no token and renewal time'
    if not math.isfinite(renewed):
      return None, f'{excerpt} has no valid renewal time'
  return record, None


def workdir_lock(workdir: str):
  """The lock for ``workdir``: a flock locally, a renewed lease in a bucket."""
  return RemoteWorkdirLock(workdir) if files.is_remote(workdir) else WorkdirLock(workdir)


def _unwritable(workdir: str, e: OSError) -> PermissionError:
  return PermissionError(f'Cannot write to the workdir {workdir} ({e}); pass a writable --workdir.')


def _lost_error(workdir: str, reason: str) -> WorkdirLostError:
  return WorkdirLostError(
      f'{workdir}: this run no longer holds its lock ({reason}), so another run may be writing '
      'there. Stop this run before it writes again; rerun it once the other run has ended, to '
      'continue from the last checkpoint, or train into another --workdir.',
      workdir=workdir,
      holder=reason,
  )


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class WorkdirLock:
  """Context manager: holds the local ``workdir`` exclusively, or raises WorkdirBusyError.

  ``lost`` / ``check()``: whether it still does (module docstring).
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._folder = None  # The workdir, open: its inode is the lock that cannot be swapped.
    self._folder_locked = False
    self._file = None
    self._lost = None

  def __enter__(self) -> 'WorkdirLock':
    if jax.process_index() != 0:
      return self
    try:
      os.makedirs(self.workdir, exist_ok=True)
      folder = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
      raise _unwritable(self.workdir, e) from e
    try:
      self._folder_locked = self._lock_folder(folder)
      f = self._lock_file()
    except BaseException:
      os.close(folder)
      raise
    self._folder = folder
    f.seek(0)
    previous = f.read()
    if previous.strip():
      record, unreadable = _parse(previous, lease=False)
      if record is not None:
        logging.warning(
            'Taking over %s: its previous holder %s ended without releasing it.',
            self.workdir,
            _show(record),
        )
      else:
        logging.warning(
            'Taking over %s: %s is unreadable (%s); no live process holds it.',
            self.workdir,
            self.path,
            unreadable,
        )
    self._write_holder(f)
    self._file = f
    _HELD.append(self)
    return self

  def _lock_folder(self, folder: int) -> bool:
    try:
      fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      raise self._busy(self._read_path()) from None
    except OSError as e:  # NFS emulates flock with fcntl locks, which need a writable file.
      logging.warning(
          'Cannot lock the folder %s itself (%s): only its %s is locked, so deleting that '
          'file while this run holds it would let a second run in.',
          self.workdir,
          e,
          LOCK_FILE,
      )
      return False

  def _lock_file(self):
    """Opens and flocks the .lock at the path, retrying if it is swapped meanwhile."""
    for _ in range(_RETRIES):
      try:
        f = open(self.path, 'a+b')  # pylint: disable=consider-using-with
      except OSError as e:
        raise _unwritable(self.workdir, e) from e
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        f.seek(0)
        raw = f.read()
        f.close()
        raise self._busy(raw) from None
      if self._at_path(f):
        return f
      f.close()  # Deleted or replaced between open and flock: lock the file there now.
    raise WorkdirBusyError(
        f'{self.path} kept being replaced while this run tried to lock it: another process '
        'is deleting or rewriting it. Stop that process, then rerun this command.',
        workdir=self.workdir,
        holder='(unknown: .lock keeps being replaced)',
    )

  def _at_path(self, f) -> bool:
    """Whether ``f`` is the file at ``self.path`` (not deleted, not replaced)."""
    try:
      return _same_inode(os.stat(self.path), os.fstat(f.fileno()))
    except FileNotFoundError:
      return False

  def _read_path(self) -> bytes | None:
    try:
      with open(self.path, 'rb') as f:
        return f.read()
    except FileNotFoundError:
      return None

  def _write_holder(self, f) -> None:
    f.seek(0)
    f.truncate()
    f.write(json.dumps(_holder()).encode('utf-8'))
    f.flush()

  def _busy(self, raw: bytes | None) -> WorkdirBusyError:
    if raw is None:
      holder = f'(unknown: its {self.path} is missing, deleted while it runs)'
    elif not raw.strip():
      holder = '(unknown: it has not written its name yet)'
    else:
      record, unreadable = _parse(raw, lease=False)
      holder = _show(record) if record else f'(unknown: {self.path} is unreadable: {unreadable})'
    return WorkdirBusyError(
        f'{self.workdir} is in use by another run: {holder}. A local lock is held only while '
        'its process lives (the kernel releases it however the process ends), so that run is '
        'alive: wait for it to finish, or stop it, then rerun this command to continue from the '
        'checkpoints; or train into another --workdir. Nothing was written.',
        workdir=self.workdir,
        holder=holder,
    )

  @property
  def lost(self) -> str | None:
    """Why this run no longer holds the workdir (checked now), or None while it does."""
    if self._file is not None and self._lost is None:
      self._lost = self._verify()
    return self._lost

  def check(self) -> None:
    """Raises WorkdirLostError if the lock was lost: call it before writing a checkpoint."""
    if self.lost:
      raise _lost_error(self.workdir, self._lost)

  def _verify(self) -> str | None:
    try:
      folder_now = os.stat(self.workdir)
    except OSError:
      folder_now = None
    if folder_now is None or not _same_inode(folder_now, os.fstat(self._folder)):
      return f'the workdir {self.workdir} was deleted or replaced while this run held it'
    if self._at_path(self._file):
      return None
    # .lock deleted or replaced: lock the file now there, or learn who holds it.
    try:
      f = self._lock_file()
    except WorkdirBusyError as e:
      return f'its {self.path} was replaced by one another run holds: {e.holder}'
    except PermissionError as e:
      if self._folder_locked:  # The folder's lock still keeps other runs out.
        logging.warning('Cannot put back %s, deleted while this run held it: %s', self.path, e)
        return None
      return f'its {self.path} was deleted and cannot be put back ({e})'
    self._write_holder(f)
    self._file.close()
    self._file = f
    logging.warning(
        '%s was deleted or replaced while this run held it; it is back (%s).',
        self.path,
        'the lock on the folder kept other runs out'
        if self._folder_locked
        else 'no other run had taken it',
    )
    return None

  def __exit__(self, *exc) -> None:
    if self._file is None:
      return
    if self in _HELD:
      _HELD.remove(self)
    # Empty its own file first (an unlinked one if it was replaced): a non-empty lock file
    # means its holder ended without this.
    self._file.seek(0)
    self._file.truncate()
    self._file.flush()
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()
    self._file = None
    os.close(self._folder)  # Releases the folder's flock.
    self._folder = None


class RemoteWorkdirLock:
  """Context manager: a renewed lease on ``<workdir>/.lock`` in a bucket (module docstring)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = files.join(workdir, LOCK_FILE)
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread = None
    self._lost = None

  def _read(self) -> tuple[dict | None, str | None]:
    """(lease, None); (None, None) without one; (None, why) when unreadable.

    Raises OSError when the store does not answer: that is no evidence of a free workdir.
    """
    try:
      raw = files.read_bytes(self.path)
    except FileNotFoundError:
      return None, None
    return _parse(raw, lease=True)

  def _write(self) -> None:
    files.write_json(self.path, {**self.holder, 'token': self.token, 'renewed': time.time()})

  def _busy(self, lease: dict, age: float, how: str) -> WorkdirBusyError:
    holder = f'{_show(lease)}, {how}'
    return WorkdirBusyError(
        f'{self.workdir} is in use by another run: {holder}. If that run is gone (a lost VM), '
        f'its lease expires in at most {max(0.0, LEASE_SECONDS - age):.0f} s '
        f'({LEASE_SECONDS:.0f} s after its last renewal), and rerunning then continues this run '
        'from its checkpoints; if it is alive, wait for it to finish or train into another '
        '--workdir. Nothing was written.',
        workdir=self.workdir,
        holder=holder,
    )

  def _read_or_fail(self) -> tuple[dict | None, str | None]:
    try:
      return self._read()
    except OSError as e:
      raise OSError(
          f'Cannot read the lease {self.path} ({e}), so whether another run holds '
          f'{self.workdir} is unknown; rerun when the store answers.'
      ) from e

  def __enter__(self) -> 'RemoteWorkdirLock':
    if jax.process_index() != 0:
      return self
    self.holder = _holder()
    lease, unreadable = self._read_or_fail()
    if lease is not None:
      age = time.time() - lease['renewed']
      if age < LEASE_SECONDS and not _gone(lease):
        raise self._busy(lease, age, f'lease renewed {age:.0f} s ago')
      logging.warning(
          'Taking over %s: the lease of %s was last renewed %.0f s ago and %s.',
          self.workdir,
          _show(lease),
          age,
          'its holder is gone' if age >= LEASE_SECONDS else 'its process on this machine is gone',
      )
    elif unreadable:
      logging.warning(
          'Taking over %s: its lease %s is unreadable (%s), so no live run renews it.',
          self.workdir,
          self.path,
          unreadable,
      )
    try:
      files.makedirs(self.workdir)
      self._write()
    except OSError as e:
      raise _unwritable(self.workdir, e) from e
    time.sleep(SETTLE_SECONDS)
    lease, unreadable = self._read_or_fail()
    if lease is None or lease['token'] != self.token:
      raise self._busy(lease or {}, 0.0, 'which started at the same time')
    self._thread = threading.Thread(target=self._renew, daemon=True, name='workdir-lease')
    self._thread.start()
    _HELD.append(self)
    return self

  def _lost_reason(self, lease: dict | None, unreadable: str | None) -> str | None:
    if lease is not None and lease['token'] == self.token:
      return None
    if lease is not None:
      return f'its lease {self.path} now names another run: {_show(lease)}'
    if unreadable:
      return f'its lease {self.path} was overwritten with unreadable content ({unreadable})'
    return f'its lease {self.path} is missing: deleted while this run held it'

  def _renew(self) -> None:
    while not self._stop.wait(RENEW_SECONDS):
      try:
        lease, unreadable = self._read()
      except OSError as e:  # A transient store error: the next renewal retries.
        logging.warning('Reading back the lease %s failed: %s', self.path, e)
        continue
      reason = self._lost_reason(lease, unreadable)
      if reason:
        # Never written again: a second run may hold the workdir now.
        self._lost = reason
        logging.error(
            '%s: this run no longer holds its lock (%s); it stops before its next checkpoint.',
            self.workdir,
            reason,
        )
        return
      try:
        self._write()
      except OSError as e:  # A transient store error: the next renewal retries.
        logging.warning('Renewing the lease on %s failed: %s', self.workdir, e)

  @property
  def lost(self) -> str | None:
    """Why this run no longer holds the workdir (as of the last renewal or check), or None."""
    return self._lost

  def check(self) -> None:
    """Reads the lease back; raises WorkdirLostError if it is not this run's. Before each save."""
    if self._thread is None:
      return
    if self._lost is None:
      try:
        self._lost = self._lost_reason(*self._read())
      except OSError as e:  # The last renewal's answer stands.
        logging.warning('Reading back the lease %s before a save failed: %s', self.path, e)
    if self._lost:
      raise _lost_error(self.workdir, self._lost)

  def __exit__(self, *exc) -> None:
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None
    if self in _HELD:
      _HELD.remove(self)
    if self._lost:
      return  # Not this run's lease any more: leave it.
    try:
      lease, _ = self._read()
    except OSError as e:
      logging.warning('Cannot release the lease %s (%s); it expires on its own.', self.path, e)
      return
    if lease is not None and lease['token'] == self.token:
      files.remove(self.path)
