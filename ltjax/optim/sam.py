"""Sharpness-aware minimisation (SAM, ASAM) as one opaque optax transform.

One ``update`` call is one whole SAM step (Foret et al. 2021), the way optax's
``contrib.sam`` works in opaque mode:

  g     = updates                          # clean loss gradient at theta
  e     = rho_t * g / (|g| + eps)          # ascent, restricted to perturb_mask
  g_adv = grad_fn(theta + e)               # loss gradient at the perturbed point
  out   = base.update(g_adv, base_state, theta)

|g| is the global L2 norm over the *selected* leaves; unselected leaves get
e = 0. ``g`` holds no weight decay: the base optimiser (e.g. ``torch_sgd``)
adds it, at the unperturbed theta, in its own step -- the procedure of the
davda54 SAM used by DDC and Saddle (restore theta, then ``base_optimizer.step``).

Adaptive SAM (ASAM, Kwon et al. 2021) rescales the ascent by T = |theta|
elementwise: e = rho_t * T^2 g / (|T g| + eps), which is scale invariant. This is
the davda54 form (T = |theta| for every parameter); Kwon et al.'s own code uses
T = |theta| + 0.01 for weights and T = 1 for biases, with rho about 10x larger.

BatchNorm: the caller's ``grad_fn`` runs a second forward pass; its running
statistics must be discarded so they come from the clean pass only (as Google's
Flax SAM does; the PyTorch ports update them twice).

The radius rho_t follows a schedule of the SAM step count kept in the state;
``step_rho_schedule`` builds Saddle's piecewise-constant per-epoch schedule.
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


class SAMState(NamedTuple):
  """State of :func:`sam`."""

  count: jax.Array  # shape=(), dtype=jnp.int32; SAM steps taken, the rho schedule's time.
  base_state: optax.OptState  # state of the base (outer) optimiser.


def resolve_mask(mask, params):
  """Full pytree of bools for an optax-style mask (None, pytree or callable).

  A pytree mask may be a prefix of ``params``: a bool at an inner node selects
  the whole subtree.
  """
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  if callable(mask):
    mask = mask(params)
  return jax.tree.map(lambda m, sub: jax.tree.map(lambda _: bool(m), sub), mask, params)


def sam_perturbation(grads, params, rho, *, mask=None, adaptive: bool = False, eps: float = 1e-12):
  """The SAM (or ASAM) ascent e, a pytree like ``params``.

  Args:
    grads: loss gradient at ``params`` (no weight decay in it).
    params: current parameters (used for the mask and by ASAM's T = |theta|).
    rho: radius (scalar, may be traced).
    mask: pytree of bools or callable params -> pytree of bools selecting the
      perturbed leaves, as optax masks; None perturbs every leaf. The norm is
      taken over the selected leaves only; unselected leaves get zeros.
    adaptive: ASAM: e = rho * T^2 g / (|T g| + eps) with T = |theta|.
    eps: added to the norm, 1e-12 as in the davda54 SAM.

  Returns:
    e with |e| = rho * |g| / (|g| + eps) over the selected leaves (ASAM: |e / T|).

  References:
    Foret et al., Sharpness-Aware Minimization for Efficiently Improving
    Generalization, ICLR 2021. Kwon et al., ASAM: Adaptive Sharpness-Aware
    Minimization for Scale-Invariant Learning of Deep Neural Networks, ICML 2021.
  """
  selected = resolve_mask(mask, params)
  if adaptive:
    scaled = jax.tree.map(lambda g, p: g * jnp.abs(p), grads, params)
  else:
    scaled = grads
  # Zeroing unselected leaves before the norm restricts |g| to the subset.
  scaled = jax.tree.map(lambda s, m: s if m else jnp.zeros_like(s), scaled, selected)
  norm = jnp.sqrt(sum(jnp.sum(jnp.square(s.astype(jnp.float32))) for s in jax.tree.leaves(scaled)))
  scale = rho / (norm + eps)
  if adaptive:
    return jax.tree.map(lambda s, p: (scale * jnp.abs(p) * s).astype(s.dtype), scaled, params)
  return jax.tree.map(lambda s: (scale * s).astype(s.dtype), scaled)


def sam(
    base: optax.GradientTransformation,
    *,
    rho: optax.ScalarOrSchedule,
    perturb_mask=None,
    adaptive: bool = False,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
  """Sharpness-aware minimisation around ``base``, one whole step per update.

  ``update(updates, state, params, *, grad_fn, **extra)``: ``updates`` is the
  clean loss gradient at ``params`` (without weight decay); ``grad_fn(p)``
  returns the loss gradient at ``p`` on the same batch (its BatchNorm
  statistics are the caller's to discard). The result is
  ``base.update(grad_fn(params + e), base_state, params, **extra)``. Put SAM
  outermost: inside ``optax.chain`` or a ``multi_transform`` it would see
  transformed or masked trees instead of gradients and parameters.

  Args:
    base: the outer optimiser, e.g. ``torch_sgd`` (adds weight decay itself),
      optionally chained with ``projected_max_norm``.
    rho: radius, a non-negative float or a schedule ``count -> rho`` of the SAM
      step count (e.g. :func:`step_rho_schedule`).
    perturb_mask: pytree of bools or callable params -> pytree (optax masks)
      selecting the perturbed parameters; None = all (the norm is over the
      selected leaves only).
    adaptive: ASAM's scale-invariant perturbation with T = |theta|.
    eps: added to the gradient norm.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state :class:`SAMState`.

  References:
    Foret et al., Sharpness-Aware Minimization for Efficiently Improving
    Generalization, ICLR 2021. Kwon et al., ASAM, ICML 2021.
  """
  if not isinstance(base, optax.GradientTransformation):
    raise TypeError(f'base must be an optax.GradientTransformation, got {type(base)}.')
  if not callable(rho):
    if not jnp.ndim(rho) == 0 or not float(rho) >= 0:
      raise ValueError(f'rho must be a non-negative scalar or a schedule, got {rho!r}.')
  if not (perturb_mask is None or callable(perturb_mask) or jax.tree.leaves(perturb_mask)):
    raise ValueError('perturb_mask must be None, a callable or a non-empty pytree of bools.')
  if not float(eps) >= 0:
    raise ValueError(f'eps must be non-negative, got {eps!r}.')
  adaptive = bool(adaptive)
  base = optax.with_extra_args_support(base)

  def init_fn(params):
    return SAMState(count=jnp.zeros([], jnp.int32), base_state=base.init(params))

  def update_fn(updates, state, params=None, *, grad_fn: Callable | None = None, **extra):
    if params is None:
      raise ValueError(
          'sam needs the current parameters: call update(grads, state, params, ' 'grad_fn=...).'
      )
    if grad_fn is None:
      raise ValueError('sam needs grad_fn=: a function params -> loss gradient on this batch.')
    rho_t = rho(state.count) if callable(rho) else rho
    e = sam_perturbation(updates, params, rho_t, mask=perturb_mask, adaptive=adaptive, eps=eps)
    adv_grads = grad_fn(optax.apply_updates(params, e))
    new_updates, base_state = base.update(adv_grads, state.base_state, params, **extra)
    return new_updates, SAMState(count=optax.safe_increment(state.count), base_state=base_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def step_rho_schedule(
    boundaries_epochs: Sequence[int], values: Sequence[float], steps_per_epoch: int
) -> Callable[[Any], jax.Array]:
  """Piecewise-constant rho per epoch: values[i] from epoch boundaries_epochs[i-1].

  Epochs are counted from 0 as ``floor(count / steps_per_epoch)``. Saddle's
  ImageNet-LT schedule (1-based epochs 1-5 / 6-60 / 61-75 / 76-90 at
  0.05 / 0.1 / 0.5 / 0.5) is ``step_rho_schedule([5, 60, 75], [0.05, 0.1, 0.5, 0.5], spe)``;
  DDC's two-value ``adjust_rho`` is ``step_rho_schedule([E], [rho0, rho1], spe)``.

  Args:
    boundaries_epochs: strictly increasing epochs at which the next value starts.
    values: len(boundaries_epochs) + 1 non-negative radii.
    steps_per_epoch: optimiser steps per epoch.

  Returns:
    ``rho(count)``, a float32 scalar.
  """
  boundaries = [int(b) for b in boundaries_epochs]
  values = [float(v) for v in values]
  if len(values) != len(boundaries) + 1:
    raise ValueError(
        f'Need len(values) == len(boundaries_epochs) + 1, got {len(values)} '
        f'values for {len(boundaries)} boundaries.'
    )
  if any(b1 <= b0 for b0, b1 in zip(boundaries, boundaries[1:])) or any(b < 0 for b in boundaries):
    raise ValueError(f'boundaries_epochs must be non-negative and increasing: {boundaries}.')
  if any(not v >= 0 for v in values):
    raise ValueError(f'rho values must be non-negative: {values}.')
  if int(steps_per_epoch) < 1:
    raise ValueError(f'steps_per_epoch must be >= 1, got {steps_per_epoch}.')
  table = jnp.asarray(values, jnp.float32)
  edges = jnp.asarray(boundaries or [0], jnp.int32)

  def schedule(count):
    epoch = jnp.asarray(count, jnp.int32) // steps_per_epoch
    index = jnp.sum(epoch >= edges) if boundaries else 0
    return table[index]

  return schedule
