"""ltjax.train.workdir_lock: one writer per workdir; a dead holder's lock is taken over."""

import json
import os
import subprocess
import sys

import pytest

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
