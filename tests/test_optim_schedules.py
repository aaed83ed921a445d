"""Tests for ltjax.optim.schedules: the recipes' learning-rate schedules."""

import numpy as np
import pytest

from configs import base
from ltjax import optim


def schedule_config(**overrides):
  config = base.get_config().schedule
  config.update(overrides)
  return config


def test_cc_sam_warmup_multistep_with_epoch_start_stepping():
  # CC-SAM: lr 0.1, warm-up from 1/3 over 5 epochs, milestones 160/180, stepped at
  # the start of each epoch, so epoch 0 trains at ~0.0467 and epoch 4 at 0.1.
  config = schedule_config(
      name='warmup_multistep',
      granularity='epoch',
      epoch_offset=1,
      warmup_epochs=5,
      warmup_start_factor=1 / 3,
      milestones=(160, 180),
      gamma=0.1,
  )
  lr = optim.build_schedule(config, base_lr=0.1, steps_per_epoch=10, num_epochs=200)
  by_epoch = lambda e: float(lr(10 * e + 3))
  np.testing.assert_allclose(by_epoch(0), 0.1 * (1 / 3 * 0.8 + 0.2), rtol=1e-6)
  np.testing.assert_allclose([by_epoch(4), by_epoch(158)], [0.1, 0.1], rtol=1e-6)
  np.testing.assert_allclose([by_epoch(159), by_epoch(179)], [0.01, 0.001], rtol=1e-5)
  assert float(lr(10 * 5)) == float(lr(10 * 5 + 9))  # Constant within an epoch.


def test_cosine_per_epoch_reaches_zero_in_the_last_epoch():
  # Weight balancing: CosineAnnealingLR(T_max=E) stepped at each epoch start.
  config = schedule_config(name='cosine', granularity='epoch', epoch_offset=1)
  lr = optim.build_schedule(config, base_lr=0.01, steps_per_epoch=4, num_epochs=320)
  np.testing.assert_allclose(float(lr(0)), 0.005 * (1 + np.cos(np.pi / 320)), rtol=1e-6)
  assert float(lr(4 * 319)) == pytest.approx(0.0, abs=1e-12)


def test_cosine_per_step_with_warmup():
  config = schedule_config(name='cosine', warmup_epochs=1, warmup_start_factor=0.0)
  lr = optim.build_schedule(config, base_lr=1.0, steps_per_epoch=10, num_epochs=11)
  np.testing.assert_allclose(
      [float(lr(s)) for s in (0, 5, 10, 60, 110)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6
  )


def test_unknown_schedule_lists_the_valid_ones():
  with pytest.raises(ValueError, match="valid: .*'cosine'"):
    optim.build_schedule(schedule_config(name='cosin'), base_lr=1, steps_per_epoch=1, num_epochs=1)
