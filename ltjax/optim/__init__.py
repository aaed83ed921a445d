"""Optimisers (optax transforms) and learning-rate schedules.

  torch_sgd            PyTorch-equivalent SGD (coupled weight decay, momentum)
  sam                  sharpness-aware minimisation around any base (opaque mode)
  projected_max_norm   per-class L2 balls on the classifier (weight balancing)
  freeze / per_group   parameter groups by path regex
"""

import functools

import ml_collections
import optax

from ltjax.optim.groups import freeze
from ltjax.optim.groups import per_group
from ltjax.optim.maxnorm import MaxNormState
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import max_norm_thresholds
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sam import SAMState
from ltjax.optim.sam import sam
from ltjax.optim.sam import sam_perturbation
from ltjax.optim.sam import step_rho_schedule
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
