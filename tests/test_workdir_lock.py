"""ltjax.train.workdir_lock: one writer per workdir; a dead holder's lock is taken over."""

import json
import os
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
    with pytest.raises(WorkdirInUseError, match=rf"in use by another run: .*'pid': {os.getpid()}"):
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
  with pytest.raises(WorkdirInUseError, match="'host': 'other'.*started at the same time"):
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
