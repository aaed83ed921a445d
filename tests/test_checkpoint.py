"""ltjax.train.checkpoint: fallback past an unreadable latest checkpoint, step lookups."""

import glob
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding


def fresh_state(config):
  model = models.build_model(config.model, 10)
  tx = optim.base_optimizer(config.optim, lambda count: 0.1)  # The run's state structure.
  return train.create_train_state(
      model, tx, input_shape=(28, 28, 1), seed=0, mesh=sharding.make_mesh()
  )


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4)
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  # Damage every data file of the newest checkpoint (a disk fault, an interrupted copy).
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '8', '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 16 and 'METADATA' not in path:
      with open(path, 'r+b') as f:
        f.truncate(8)
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
