"""ltjax.train.checkpoint: unreadable checkpoints (skipped, moved aside, named), step lookups."""

import glob
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import checkpoint
from ltjax.train import sharding
from ltjax.train import stages


def fresh_state(config):
  model = models.build_model(config.model, 10)
  tx = optim.base_optimizer(config.optim, lambda count: 0.1)  # The run's state structure.
  return train.create_train_state(
      model, tx, input_shape=(28, 28, 1), seed=0, mesh=sharding.make_mesh()
  )


def damage(workdir, step):
  """Truncates every data file of checkpoints/<step> (a disk fault, an interrupted copy)."""
  for path in glob.glob(os.path.join(workdir, 'checkpoints', str(step), '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 16 and 'METADATA' not in path:
      with open(path, 'r+b') as f:
        f.truncate(8)


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  damage(workdir, 8)
  checkpoints = train.Checkpoints(workdir)
  try:
    restored = checkpoints.restore(fresh_state(config))
  finally:
    checkpoints.close()
  assert int(restored.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.params))
  assert 'Resuming from step 4: the newer checkpoints' in capsys.readouterr().out


def test_a_missing_step_names_the_steps_there_are_and_best_steps_are_found(tmp_path):
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4, keep_checkpoints=1)
  train.train_and_evaluate(config, str(tmp_path))
  checkpoints = train.Checkpoints(str(tmp_path))
  try:
    steps = checkpoints.steps()
    assert steps['latest'] == [8] and steps['best'] == [8]
    assert checkpoints.check_step('best', 8) == 'best'
    with pytest.raises(FileNotFoundError, match=r'No checkpoint at step 5 .*holds steps \[8\]'):
      checkpoints.check_step('latest', 5)
  finally:
    checkpoints.close()
  with pytest.raises(ValueError, match='keep_checkpoints=0 must be >= 1'):
    train.Checkpoints(str(tmp_path), keep=0)


def test_a_damaged_latest_checkpoint_is_moved_aside_and_its_step_saved_again(tmp_path, capsys):
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  damage(workdir, 8)
  trained = []
  count = lambda step, state: trained.append(step)
  train.train_and_evaluate(config, workdir, hooks=[count])
  assert trained == [5, 6, 7, 8]  # Resumed from step 4.
  moved = os.listdir(os.path.join(workdir, 'damaged'))
  assert len(moved) == 1 and moved[0].startswith('8-'), moved
  out = capsys.readouterr().out
  assert f'moved to {workdir}/damaged/{moved[0]}' in out, out
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  trained.clear()
  train.train_and_evaluate(config, workdir, hooks=[count])
  assert trained == []  # Step 8 was saved again: nothing is retrained.


def test_evaluating_a_damaged_checkpoint_names_it_and_the_fix(tmp_path):
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  damage(workdir, 8)
  model = models.build_model(config.model, 10)
  with pytest.raises(ValueError, match='cannot be read') as error:
    stages.restore_variables(workdir, model, input_shape=(28, 28, 1), which='latest')
  message = str(error.value)
  assert os.path.join(workdir, 'checkpoints', '8') in message
  assert '--checkpoint=4' in message and 'ltjax.train' in message, message
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '8']
  assert not os.path.exists(os.path.join(workdir, 'damaged'))  # Evaluation moves nothing.


def test_a_damaged_config_json_names_the_file_and_the_fix(tmp_path):
  path = tmp_path / 'config.json'
  path.write_bytes(b'{\n  "seed": 0,\n  "name": "\xe9"\n}')  # Latin-1, not UTF-8.
  with pytest.raises(ValueError) as error:
    checkpoint.load_config(str(tmp_path))
  message = str(error.value)
  assert message.startswith(f'{path} is not UTF-8 at byte 26 (line 3)'), message
  assert 'delete it and rerun the training command' in message, message
  assert 'config.1.json' not in message
  (tmp_path / 'config.1.json').write_text('{}')
  path.write_text('{\n  "seed": 0,\n  "name": \n}')
  with pytest.raises(ValueError) as error:
    checkpoint.read_config_json(str(path))  # What resume_check compares against.
  message = str(error.value)
  assert message.startswith(f'{path} is not JSON: Expecting value at line 4 column 1'), message
  assert f'{tmp_path}/config.1.json' in message, message
