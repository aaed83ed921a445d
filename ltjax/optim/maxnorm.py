"""MaxNorm by projected gradient descent (weight balancing, Alshammari et al. 2022).

Weight balancing's stage 2 constrains every class vector w_c of the classifier
to an L2 ball, |w_c| <= tau, and enforces it by projection after the step
(PGD): a column with |w_c| > tau is rescaled to norm tau, the others are left
alone. The threshold is computed once from the stage-1 classifier,

  tau = min_c |w_c| + thresh * (max_c |w_c| - min_c |w_c|),   thresh = 0.1,

and the bias is exempt (threshold infinity). ``projected_max_norm`` is the
projection as the last transform of an optax chain: it rewrites ``updates`` so
that ``params + updates`` is feasible, and leaves feasible columns' updates
bitwise unchanged. Flax Dense kernels are (d, C), so w_c is a column and the
norm runs over every axis but the last (the output axis).

The official demo projects once per epoch (after the epoch's loop); the authors
say it should be per iteration (LTR-weight-balancing issue #5).
``every_n_steps=1`` is per iteration, ``every_n_steps=steps_per_epoch`` the demo.
"""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ltjax.param_paths import path_str


class MaxNormState(NamedTuple):
  """State of :func:`projected_max_norm`."""

  count: jax.Array  # shape=(), dtype=jnp.int32; updates seen, for every_n_steps.


def _concrete(threshold):
  """The threshold as a numpy array, or None if it is traced (only known at run time)."""
  try:
    return np.asarray(threshold)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _is_unconstrained(threshold) -> bool:
  """None or an all-infinite concrete threshold: nothing to project, statically."""
  if threshold is None:
    return True
  value = _concrete(threshold)
  return value is not None and bool(np.all(np.isinf(value)))


def column_norms(kernel: jax.Array) -> jax.Array:
  """|w_c| for every output c: L2 norm over all axes but the last."""
  return jnp.sqrt(jnp.sum(jnp.square(kernel), axis=tuple(range(kernel.ndim - 1))))


def max_norm_thresholds(kernel: jax.Array, thresh: float = 0.1) -> jax.Array:
  """tau = min_c |w_c| + thresh * (max_c - min_c) of a (d, C) classifier kernel.

  Args:
    kernel: the stage-1 classifier kernel, (d, C) (columns are class vectors).
    thresh: interpolation between the smallest and the largest class norm.

  Returns:
    tau, a float32 scalar (one threshold for the layer, as the official code).

  References:
    Alshammari et al., Long-Tailed Recognition via Weight Balancing, CVPR 2022
    (``MaxNorm_via_PGD``, thresh = 0.1).
  """
  if jnp.ndim(kernel) < 2:
    raise ValueError(f'kernel must have a class axis last, got shape {jnp.shape(kernel)}.')
  norms = column_norms(jnp.asarray(kernel, jnp.float32))
  return jnp.min(norms) + thresh * (jnp.max(norms) - jnp.min(norms))


def head_max_norm(params, thresh: float = 0.1, *, regex: str = 'head/kernel'):
  """Thresholds pytree for :func:`projected_max_norm` from stage-1 ``params``.

  The leaf at path ``head/kernel`` (``regex``, matched against '/'-joined paths)
  gets :func:`max_norm_thresholds`; every other leaf, the bias included, gets
  None (unconstrained).
  """
  pattern = re.compile(regex)
  found = []

  def leaf(path, x):
    if pattern.fullmatch(path_str(path)):
      found.append(path_str(path))
      return max_norm_thresholds(x, thresh)
    return None

  thresholds = jax.tree_util.tree_map_with_path(leaf, params)
  if not found:
    raise ValueError(f'No parameter path matches {regex!r}.')
  return thresholds


def projected_max_norm(thresholds, *, every_n_steps: int = 1) -> optax.GradientTransformation:
  """Keeps every class vector of ``params + updates`` inside its L2 ball.

  Must be the last transform of a chain: it sees the final ``updates``. Columns
  already inside their ball, and every unconstrained leaf, keep their updates
  bitwise; a column outside is projected onto the sphere of radius tau_c.

  Args:
    thresholds: pytree matching ``params``; a leaf is None or infinite
      (unconstrained), or tau: a scalar or a (C,) array of per-class
      thresholds, for a kernel of ndim >= 2 whose last axis is the class.
    every_n_steps: 1 projects every iteration (the paper's intent); N projects
      only on updates where (count + 1) % N == 0, e.g. once per epoch as the
      official demo.

  Returns:
    An ``optax.GradientTransformation`` with state :class:`MaxNormState`.

  References:
    Alshammari et al., Long-Tailed Recognition via Weight Balancing, CVPR 2022.
  """
  every_n_steps = int(every_n_steps)
  if every_n_steps < 1:
    raise ValueError(f'every_n_steps must be >= 1, got {every_n_steps}.')
  is_none = lambda x: x is None
  for tau in jax.tree.leaves(thresholds, is_leaf=is_none):
    value = None if tau is None else _concrete(tau)
    if value is not None and (value.ndim > 1 or np.any(value <= 0) or np.any(np.isnan(value))):
      raise ValueError(f'Thresholds must be positive scalars or (C,) vectors, got {tau!r}.')

  def init_fn(params):
    def check(tau, p):
      if _is_unconstrained(tau):
        return
      if p.ndim < 2 or np.ndim(tau) == 1 and np.shape(tau)[0] != p.shape[-1]:
        raise ValueError(
            f'Threshold of shape {np.shape(tau)} does not fit a parameter of shape '
            f'{p.shape}: need ndim >= 2 and a scalar or one threshold per column.'
        )

    jax.tree.map(check, thresholds, params, is_leaf=is_none)
    return MaxNormState(count=jnp.zeros([], jnp.int32))

  def project(tau, u, p):
    if _is_unconstrained(tau):
      return u
    new = p + u
    norms = column_norms(new)
    tau = jnp.asarray(tau, norms.dtype)
    outside = norms > tau
    # Divide only where outside, so the where below never sees 0/0 nor inf/inf.
    factor = tau / jnp.where(outside, norms, 1)
    projected = (new * factor).astype(u.dtype) - p
    # Feasible columns keep their update bitwise (an exact no-op inside the ball).
    return jnp.where(outside, projected, u)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          'projected_max_norm needs the current parameters, but `params` was '
          'not passed to `update`.'
      )
    projected = jax.tree.map(project, thresholds, updates, params, is_leaf=is_none)
    if every_n_steps > 1:
      due = (state.count + 1) % every_n_steps == 0
      projected = jax.tree.map(lambda a, b: jnp.where(due, a, b), projected, updates)
    return projected, MaxNormState(count=optax.safe_increment(state.count))

  return optax.GradientTransformation(init_fn, update_fn)
