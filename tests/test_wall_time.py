"""ltjax.train.wall_time: a stage's time summed over the processes that trained it."""

import json
import os

import pytest

from ltjax.train import wall_time


class Clock:
  """time.perf_counter under the test's control."""

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  fake = Clock()
  monkeypatch.setattr(wall_time.time, 'perf_counter', fake)
  return fake


def recorded(workdir):
  return json.load(open(os.path.join(workdir, wall_time.StageWallTime.FILENAME)))


def test_a_resume_continues_from_the_seconds_of_its_checkpoint(tmp_path, clock):
  workdir = str(tmp_path)
  first = wall_time.StageWallTime(workdir, 0, started=clock.now)
  clock.now += 30.0
  first.saved(4)
  clock.now += 25.0
  first.saved(8)
  clock.now += 12.0  # Killed here: these 12 s of work are lost and redone.
  assert recorded(workdir) == {'4': 30.0, '8': 55.0}

  # The checkpoint of step 8 was damaged: the next process resumes from step 4.
  clock.now += 1000.0  # Time between the processes is nobody's.
  second = wall_time.StageWallTime(workdir, 4, started=clock.now)
  assert second.complete and second.seconds() == 30.0
  clock.now += 40.0
  second.saved(8)  # Step 8 again, with this process's time.
  assert recorded(workdir) == {'4': 30.0, '8': 70.0}
  clock.now += 5.0
  assert second.seconds() == 75.0


def test_a_fresh_stage_forgets_an_earlier_attempts_entries(tmp_path, clock):
  workdir = str(tmp_path)
  lost = wall_time.StageWallTime(workdir, 0, started=clock.now)
  clock.now += 30.0
  lost.saved(4)  # Its checkpoints went with its machine; the record stayed.
  fresh = wall_time.StageWallTime(workdir, 0, started=clock.now)
  assert recorded(workdir) == {}
  clock.now += 7.0
  assert fresh.complete and fresh.seconds() == 7.0


def test_a_checkpoint_without_an_entry_counts_this_process_and_says_so(tmp_path, clock):
  workdir = str(tmp_path)  # A checkpoint saved before wall_time.json existed.
  resumed = wall_time.StageWallTime(workdir, 6, started=clock.now)
  clock.now += 9.0
  assert not resumed.complete and resumed.seconds() == 9.0
  resumed.saved(8)
  assert recorded(workdir) == {'8': 9.0}
