"""Optimisers (optax transforms) and learning-rate schedules.

  torch_sgd            PyTorch-equivalent SGD (coupled weight decay, momentum)
  sam                  sharpness-aware minimisation around any base (opaque mode)
  projected_max_norm   per-class L2 balls on the classifier (weight balancing)
  freeze / per_group   parameter groups by path regex
  build_optimizer      a stage's whole chain from its config, wrapped in order
  build_schedule       the learning-rate schedule of ``config.schedule``

Parameter paths and their regex masks are in ``ltjax.param_paths``.
"""

from ltjax.optim.build import OPTIMIZERS
from ltjax.optim.build import SAM_BATCH_NORM_STATISTICS
from ltjax.optim.build import base_optimizer
from ltjax.optim.build import build_optimizer
from ltjax.optim.build import sam_rho
from ltjax.optim.build import uses_sam
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
from ltjax.optim.schedules import SCHEDULES
from ltjax.optim.schedules import build_schedule
from ltjax.optim.sgd import torch_sgd
