"""Learning-rate schedules as functions of the optimiser step.

A schedule's time t is measured in epochs. With ``granularity='step'`` it is
fractional, t = step / steps_per_epoch; with ``'epoch'`` it is the integer
epoch, constant within an epoch as with PyTorch's epoch-stepped schedulers,
plus ``epoch_offset``: the official CC-SAM and weight-balancing code call
``scheduler.step()`` at the *start* of each epoch, so epoch e trains with the
schedule value of index e + 1 (``epoch_offset=1``).

  constant          lr
  warmup_multistep  linear warm-up from warmup_start_factor * lr to lr over
                    warmup_epochs, then lr * gamma ** (#milestones <= t)
  cosine            linear warm-up as above, then
                    lr * (1 + cos(pi * (t - w) / (T - w))) / 2, reaching 0 at t = T
"""

from typing import Callable

import jax.numpy as jnp
import ml_collections

Schedule = Callable  # step (int array) -> learning rate (float array)
SCHEDULES = ('constant', 'warmup_multistep', 'cosine')
GRANULARITIES = ('step', 'epoch')


def build_schedule(
    schedule_config: ml_collections.ConfigDict,
    *,
    base_lr: float,
    steps_per_epoch: int,
    num_epochs: float,
) -> Schedule:
  """Returns ``lr(step)`` for ``config.schedule``."""
  s = schedule_config
  if s.name not in SCHEDULES:
    raise ValueError(f'Unknown schedule.name {s.name!r}; valid: {SCHEDULES}.')
  if s.granularity not in GRANULARITIES:
    raise ValueError(f'Unknown schedule.granularity {s.granularity!r}; valid: {GRANULARITIES}.')
  milestones = jnp.asarray(sorted(s.milestones) or [float('inf')], jnp.float32)
  warmup = float(s.warmup_epochs)
  total = float(num_epochs)

  def epoch_time(step):
    step = jnp.asarray(step, jnp.float32)
    if s.granularity == 'step':
      return step / steps_per_epoch
    return jnp.floor(step / steps_per_epoch) + s.epoch_offset

  def schedule(step):
    t = epoch_time(step)
    if warmup > 0:
      warm = s.warmup_start_factor + (1 - s.warmup_start_factor) * jnp.minimum(t / warmup, 1.0)
    else:
      warm = 1.0
    if s.name == 'constant':
      factor = 1.0
    elif s.name == 'warmup_multistep':
      factor = s.gamma ** jnp.sum(t >= milestones)
    else:  # cosine
      progress = jnp.clip((t - warmup) / max(total - warmup, 1e-8), 0.0, 1.0)
      factor = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return base_lr * warm * factor

  return schedule
