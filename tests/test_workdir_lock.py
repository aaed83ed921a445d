"""ltjax.train.workdir_lock: one writer per workdir; a dead holder's lock is taken over."""

import fcntl
import json
import os
import re
import subprocess
import sys
import time

import pytest

from fake_bucket import fake_bucket
from ltjax import files
from ltjax.train import workdir_lock
from ltjax.train.workdir_lock import WorkdirInUseError
from ltjax.train.workdir_lock import WorkdirLock


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with WorkdirLock(str(tmp_path)):
    holder = json.loads(open(tmp_path / '.lock').read())
    assert holder['pid'] == os.getpid()
    with pytest.raises(WorkdirInUseError, match=rf'in use by another run: .*"pid": {os.getpid()}'):
      with WorkdirLock(str(tmp_path)):
        pass
  assert open(tmp_path / '.lock').read() == ''  # Released cleanly.
  with WorkdirLock(str(tmp_path)):  # Free again.
    pass


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
  code = (
      'import os, sys; sys.path.insert(0, sys.argv[2])\n'
      'from ltjax.train.workdir_lock import WorkdirLock\n'
      'WorkdirLock(sys.argv[1]).__enter__()\n'
      'os.kill(os.getpid(), 9)\n'
  )
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  result = subprocess.run([sys.executable, '-c', code, str(tmp_path), repo], check=False)
  assert result.returncode == -9
  dead = json.loads(open(tmp_path / '.lock').read())['pid']
  with WorkdirLock(str(tmp_path)):
    assert json.loads(open(tmp_path / '.lock').read())['pid'] == os.getpid()
  assert f'"pid": {dead}' in caplog.text and 'ended without releasing' in caplog.text


def test_an_unwritable_workdir_is_named(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(PermissionError, match=f'Cannot write to the workdir {blocker}/run'):
    with WorkdirLock(str(blocker / 'run')):
      pass


# A workdir in a bucket: a renewed lease (gs:// served by tests/fake_bucket.py).


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'SETTLE_SECONDS', 0.0)
  with fake_bucket(str(tmp_path / 'store')):
    yield 'gs://bucket/run'


def test_a_remote_lease_refuses_a_second_holder_and_is_removed_on_release(bucket):
  with workdir_lock.workdir_lock(bucket) as lock:
    assert isinstance(lock, workdir_lock.RemoteWorkdirLock)
    assert files.read_json(f'{bucket}/.lock')['pid'] == os.getpid()
    with pytest.raises(WorkdirInUseError, match=rf'in use by another run: .*"pid": {os.getpid()}'):
      with workdir_lock.workdir_lock(bucket):
        pass
  assert not files.exists(f'{bucket}/.lock')
  with workdir_lock.workdir_lock(bucket):  # Free again.
    pass


def test_an_expired_remote_lease_is_taken_over(bucket, caplog):
  stale = {'host': 'lost-vm', 'pid': 1, 'since': 'earlier', 'token': 'old', 'renewed': 0.0}
  files.write_json(f'{bucket}/.lock', stale)
  with workdir_lock.workdir_lock(bucket):
    assert files.read_json(f'{bucket}/.lock')['pid'] == os.getpid()
  assert 'lost-vm' in caplog.text and 'Taking over' in caplog.text


def test_of_two_simultaneous_starts_only_the_last_writer_goes_on(bucket, monkeypatch):
  def other_run_writes_meanwhile(seconds):
    del seconds
    files.write_json(
        f'{bucket}/.lock',
        {'host': 'other', 'pid': 2, 'since': 'now', 'token': 'theirs', 'renewed': time.time()},
    )

  monkeypatch.setattr(workdir_lock.time, 'sleep', other_run_writes_meanwhile)
  with pytest.raises(
      workdir_lock.WorkdirBusyError, match='"host": "other".*started at the same time'
  ):
    with workdir_lock.workdir_lock(bucket):
      pass
  assert files.read_json(f'{bucket}/.lock')['token'] == 'theirs'  # Theirs is left alone.


def test_a_held_remote_lease_is_renewed(bucket, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'RENEW_SECONDS', 0.05)
  with workdir_lock.workdir_lock(bucket):
    first = files.read_json(f'{bucket}/.lock')['renewed']
    deadline = time.time() + 10
    while files.read_json(f'{bucket}/.lock')['renewed'] == first and time.time() < deadline:
      time.sleep(0.05)
    assert files.read_json(f'{bucket}/.lock')['renewed'] > first


# A lock holder in another process, driven line by line on its stdin: 'check' answers 'ok' or
# the error's class and message, 'release' releases, 'kill' dies without releasing (kill -9).
HOLDER = r"""
import os, sys
repo = sys.argv[1]
sys.path[:0] = [repo, os.path.join(repo, 'tests')]
import contextlib
from fake_bucket import fake_bucket
from ltjax.train import workdir_lock
workdir_lock.SETTLE_SECONDS = 0.0
workdir, root = sys.argv[2], sys.argv[3]
with fake_bucket(root) if root else contextlib.nullcontext():
  lock = workdir_lock.workdir_lock(workdir)
  lock.__enter__()
  print('held', flush=True)
  for line in sys.stdin:
    command = line.strip()
    if command == 'check':
      try:
        lock.check()
        print('ok', flush=True)
      except Exception as e:
        print(type(e).__name__, str(e).replace('\n', ' '), flush=True)
    elif command == 'release':
      lock.__exit__(None, None, None)
      print('released', flush=True)
    elif command == 'kill':
      os.kill(os.getpid(), 9)
"""
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Holder:
  """A process holding the lock of ``workdir`` (on the fake bucket under ``root`` if given)."""

  def __init__(self, workdir: str, root: str = ''):
    self.process = subprocess.Popen(
        [sys.executable, '-c', HOLDER, REPO, workdir, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert self.process.stdout.readline().strip() == 'held'
    self.pid = self.process.pid

  def send(self, command: str) -> str:
    self.process.stdin.write(command + '\n')
    self.process.stdin.flush()
    return self.process.stdout.readline().strip()

  def kill(self) -> None:
    self.process.kill()
    self.process.wait()


@pytest.fixture
def holders():
  started = []

  def start(workdir, root=''):
    started.append(Holder(workdir, root))
    return started[-1]

  yield start
  for holder in started:
    holder.kill()


def test_a_live_local_holder_is_refused_with_a_retryable_busy_error(tmp_path, holders):
  holder = holders(str(tmp_path))
  with pytest.raises(workdir_lock.WorkdirBusyError) as refused:
    with WorkdirLock(str(tmp_path)):
      pass
  assert isinstance(refused.value, WorkdirInUseError)  # The former name still catches it.
  message = str(refused.value)
  assert f'"pid": {holder.pid}' in message and 'rerun' in message
  assert refused.value.workdir == str(tmp_path) and f'"pid": {holder.pid}' in refused.value.holder


def test_a_live_remote_lease_is_refused_naming_its_holder_age_and_expiry(bucket):
  lease = {'host': 'other-vm', 'pid': 7, 'since': 'then', 'token': 'x', 'renewed': time.time() - 20}
  files.write_json(f'{bucket}/.lock', lease)
  with pytest.raises(workdir_lock.WorkdirBusyError) as refused:
    with workdir_lock.workdir_lock(bucket):
      pass
  message = str(refused.value)
  assert '"host": "other-vm", "pid": 7' in message
  assert re.search(r'renewed (19|20|21) s ago', message), message
  assert re.search(r'expires in at most 1(59|60|61) s \(180 s after its last renewal\)', message)
  assert 'rerunning then continues' in message
  assert files.read_json(f'{bucket}/.lock') == lease  # Left alone.


def test_the_lease_of_a_killed_process_on_this_machine_is_taken_over_at_once(
    bucket, holders, tmp_path
):
  holder = holders(bucket, store(tmp_path))
  assert files.read_json(f'{bucket}/.lock')['pid'] == holder.pid
  holder.kill()  # Between stages: its lease was renewed moments ago.
  with workdir_lock.workdir_lock(bucket):  # No 3-minute wait: its process is gone.
    assert files.read_json(f'{bucket}/.lock')['pid'] == os.getpid()


def store(tmp_path) -> str:
  """The local folder serving gs:// in the ``bucket`` fixture (the lease is a file there)."""
  return str(tmp_path / 'store')


UNREADABLE = [b'\xff\xfe\x80 not utf-8', b'{"host": "a", "pid": 1, "ren', b'[1, 2]', b'{"pid": 1}']


@pytest.mark.parametrize('content', UNREADABLE)
def test_an_unreadable_local_lock_is_taken_over_with_a_warning(tmp_path, caplog, content):
  (tmp_path / '.lock').write_bytes(content)
  with WorkdirLock(str(tmp_path)):
    assert json.loads(open(tmp_path / '.lock').read())['pid'] == os.getpid()
  if content != b'{"pid": 1}':  # A readable holder's is the usual takeover.
    assert f'{tmp_path}/.lock' in caplog.text and 'unreadable' in caplog.text


def test_an_unreadable_lock_of_a_live_holder_is_refused_not_a_decode_error(tmp_path, holders):
  holder = holders(str(tmp_path))
  with open(tmp_path / '.lock', 'r+b') as f:  # Same file, foreign bytes.
    f.write(b'\xff\xfe\x80')
  with pytest.raises(workdir_lock.WorkdirBusyError, match='unreadable'):
    with WorkdirLock(str(tmp_path)):
      pass
  assert holder.send('check') == 'ok'  # Its lock is intact.


@pytest.mark.parametrize('content', UNREADABLE)
def test_an_unreadable_remote_lease_is_taken_over_with_a_warning(bucket, caplog, tmp_path, content):
  os.makedirs(os.path.join(store(tmp_path), 'bucket', 'run'))
  with open(os.path.join(store(tmp_path), 'bucket', 'run', '.lock'), 'wb') as f:
    f.write(content)
  with workdir_lock.workdir_lock(bucket):
    assert files.read_json(f'{bucket}/.lock')['pid'] == os.getpid()
  assert f'{bucket}/.lock' in caplog.text and 'unreadable' in caplog.text


def test_deleting_the_local_lock_file_lets_no_second_writer_in(tmp_path, holders):
  holder = holders(str(tmp_path))
  os.remove(tmp_path / '.lock')
  with pytest.raises(workdir_lock.WorkdirBusyError, match=r'\.lock is missing'):
    with WorkdirLock(str(tmp_path)):
      pass
  assert holder.send('check') == 'ok'  # Still the only writer: it puts its .lock back.
  assert json.loads(open(tmp_path / '.lock').read())['pid'] == holder.pid
  with pytest.raises(workdir_lock.WorkdirBusyError, match=rf'"pid": {holder.pid}'):
    with WorkdirLock(str(tmp_path)):
      pass
  assert holder.send('release') == 'released'
  with WorkdirLock(str(tmp_path)):
    pass


def test_a_replaced_local_workdir_is_lost_and_its_holder_stops(tmp_path, holders):
  workdir = tmp_path / 'run'
  holder = holders(str(workdir))
  os.rename(workdir, tmp_path / 'moved')
  os.mkdir(workdir)
  with WorkdirLock(str(workdir)):  # A second run in the new folder: the first must stop.
    reply = holder.send('check')
    assert reply.startswith('WorkdirLostError') and 'deleted or replaced' in reply


def test_a_lock_file_taken_by_another_holder_is_lost(tmp_path):
  with WorkdirLock(str(tmp_path)) as lock:
    lock.check()
    assert lock.lost is None
    os.remove(tmp_path / '.lock')
    # Another holder locks a new file there (an older ltjax locks only .lock).
    with open(tmp_path / '.lock', 'a+', encoding='utf-8') as other:
      fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
      other.write(json.dumps({'host': 'elsewhere', 'pid': 99, 'since': 'now'}))
      other.flush()
      with pytest.raises(workdir_lock.WorkdirLostError, match='"host": "elsewhere"'):
        lock.check()
      assert 'elsewhere' in lock.lost
      with pytest.raises(workdir_lock.WorkdirLostError):
        workdir_lock.check_held()


def test_a_deleted_remote_lease_is_lost_and_never_written_again(bucket, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'RENEW_SECONDS', 0.05)
  first = workdir_lock.workdir_lock(bucket)
  with first:
    files.remove(f'{bucket}/.lock')
    deadline = time.time() + 10
    while first.lost is None and time.time() < deadline:
      time.sleep(0.05)
    assert 'missing' in first.lost
    second = workdir_lock.workdir_lock(bucket)
    with second:
      token = files.read_json(f'{bucket}/.lock')['token']
      assert token == second.token
      time.sleep(0.3)  # Several of the first's renewal periods.
      assert files.read_json(f'{bucket}/.lock')['token'] == token
      second.check()
      with pytest.raises(workdir_lock.WorkdirLostError, match='Stop this run'):
        first.check()
  assert not files.exists(f'{bucket}/.lock')  # The second released its own lease.


def test_a_remote_check_reads_the_lease_back_before_a_save(bucket):
  # Renewals far apart: the check itself must see a second run that started after a deletion.
  with workdir_lock.workdir_lock(bucket) as first:
    files.remove(f'{bucket}/.lock')
    with workdir_lock.workdir_lock(bucket):
      assert first.lost is None  # No renewal ran yet...
      with pytest.raises(workdir_lock.WorkdirLostError, match=f'pid": {os.getpid()}'):
        first.check()  # ...but the read-back before a save names the other run.
