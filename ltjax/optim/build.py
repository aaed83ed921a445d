"""A stage's optimiser from its config: the optax chain and the order of its wrappers.

``build_optimizer`` assembles, from the inside out,

  1. the base optimiser of ``config.optim`` (``torch_sgd``: masked, coupled
     weight decay, then SGD with momentum) on the learning-rate schedule;
  2. projected MaxNorm (weight balancing's stage 2, ``maxnorm.py``), chained
     *after* the base so it projects ``params + updates`` -- the parameters
     the step would produce -- back into the per-class balls: projected
     gradient descent needs the final update, so nothing may follow it;
  3. ``freeze`` (``groups.py``) of every parameter outside the stage's
     trainable regex, *around* 1-2: frozen leaves never reach the base or
     MaxNorm, so they get exactly zero updates and no momentum or weight
     decay (PyTorch leaves them out of the optimiser);
  4. SAM (``sam.py``) outermost: it must see the raw gradient of the whole
     parameter tree and the objective's ``grad_fn`` to perturb the
     parameters, and hands the gradient at the perturbed point to the chain
     inside as if it were the ordinary gradient.

Any other order changes the update: MaxNorm before the weight decay would
project a point the step then moves; SAM inside ``freeze`` would see only
the trainable leaves' gradient.
"""

import functools

import ml_collections
import optax

from ltjax.optim.groups import freeze
from ltjax.optim.maxnorm import head_max_norm
from ltjax.optim.maxnorm import projected_max_norm
from ltjax.optim.sam import sam
from ltjax.optim.sam import step_rho_schedule
from ltjax.optim.sgd import torch_sgd
from ltjax.param_paths import path_mask

OPTIMIZERS = ('sgd',)


def base_optimizer(
    optim_config: ml_collections.ConfigDict, schedule
) -> optax.GradientTransformation:
  """The optax chain of ``config.optim`` with learning rate ``schedule`` (step 1 above)."""
  if optim_config.name not in OPTIMIZERS:
    raise ValueError(f'Unknown optim.name {optim_config.name!r}; valid: {list(OPTIMIZERS)}.')
  mask = functools.partial(path_mask, regex=optim_config.weight_decay_mask)
  return torch_sgd(
      schedule,
      momentum=optim_config.momentum,
      nesterov=optim_config.nesterov,
      weight_decay=optim_config.weight_decay,
      weight_decay_mask=mask,
  )


def uses_sam(config: ml_collections.ConfigDict) -> bool:
  """Whether ``config.sam`` turns SAM on (the train step then passes ``grad_fn``)."""
  return bool(config.sam.rho > 0 or config.sam.rho_values)


# config.sam.batch_norm_statistics: the passes of a SAM step whose BatchNorm statistics are kept.
SAM_BATCH_NORM_STATISTICS = ('clean_pass', 'both_passes')


def sam_rho(sam_config: ml_collections.ConfigDict, steps_per_epoch: int):
  """SAM's radius: a constant, or piecewise constant over epochs (Saddle's ImageNet/iNat)."""
  if not sam_config.rho_values:
    return sam_config.rho
  if len(sam_config.rho_values) != len(sam_config.rho_boundaries) + 1:
    raise ValueError(
        f'sam.rho_values needs len(sam.rho_boundaries) + 1 = '
        f'{len(sam_config.rho_boundaries) + 1} values, got '
        f'{len(sam_config.rho_values)}.'
    )
  return step_rho_schedule(sam_config.rho_boundaries, sam_config.rho_values, steps_per_epoch)


def build_optimizer(
    config: ml_collections.ConfigDict,
    schedule,
    *,
    steps_per_epoch: int,
    trainable: str | None = None,
    max_norm: float = 0.0,
    max_norm_per_epoch: bool = False,
    initial_params=None,
) -> optax.GradientTransformation:
  """The whole optimiser of a stage, wrapped in the order of the module docstring.

  Args:
    config: the stage's full config (``optim`` and ``sam`` are read).
    schedule: the learning rate as a function of the step.
    steps_per_epoch: for per-epoch SAM radii and per-epoch MaxNorm.
    trainable: regex of the parameter paths that train (None: all).
    max_norm: > 0: projected MaxNorm on head/kernel, the thresholds computed
      from ``initial_params``' classifier (weight balancing's stage 2).
    max_norm_per_epoch: project once per epoch (the official demo) instead of
      every step (the paper).
    initial_params: the parameters the stage starts from (needed for MaxNorm).
  """
  tx = base_optimizer(config.optim, schedule)
  if max_norm > 0:
    if initial_params is None:
      raise ValueError(
          'MaxNorm thresholds come from the classifier the stage starts from; '
          'pass initial_params (stage 2 of a two-stage run).'
      )
    every = steps_per_epoch if max_norm_per_epoch else 1
    tx = optax.chain(
        tx, projected_max_norm(head_max_norm(initial_params, thresh=max_norm), every_n_steps=every)
    )
  if trainable is not None:
    tx = freeze(tx, trainable)
  if uses_sam(config):
    tx = sam(
        tx,
        rho=sam_rho(config.sam, steps_per_epoch),
        adaptive=config.sam.adaptive,
        perturb_mask=functools.partial(path_mask, regex=config.sam.perturb),
    )
  return tx
