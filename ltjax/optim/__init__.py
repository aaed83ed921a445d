"""Optimisers (optax transforms) and learning-rate schedules."""

import functools

import ml_collections
import optax

from ltjax.optim.schedules import build_schedule
from ltjax.optim.sgd import path_mask
from ltjax.optim.sgd import path_str
from ltjax.optim.sgd import torch_sgd


def build_optimizer(optim_config: ml_collections.ConfigDict,
                    schedule) -> optax.GradientTransformation:
  """The optax chain for ``config.optim`` with learning rate ``schedule``."""
  if optim_config.name != 'sgd':
    raise ValueError(f"Unknown optim.name {optim_config.name!r}; valid: ['sgd'].")
  mask = functools.partial(path_mask, regex=optim_config.weight_decay_mask)
  return torch_sgd(schedule, momentum=optim_config.momentum,
                   nesterov=optim_config.nesterov,
                   weight_decay=optim_config.weight_decay,
                   weight_decay_mask=mask)
