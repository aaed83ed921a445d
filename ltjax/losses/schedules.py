"""Epoch schedules of loss hyper-parameters: DRW, ADRW, TLA and LWR's lambda(t).

All take the epoch as a 0-indexed number (the first epoch is 0), integer or
fractional (step / steps_per_epoch), Python or traced: they use ``jnp.where``
so a jitted train step can take the epoch as an argument without retracing.

Switch epoch T0 (``switch_epoch``): the deferred phase runs from epoch T0 on,
i.e. ``epoch >= switch_epoch`` with 0-indexed epochs. This is the official code
(kaidic/LDAM-DRW and wang22ti/DDC; docs/references.md, 'DDC: losses and
schedules' and 'LDAM-DRW'): LDAM-DRW and DDC pick the DRW/ADRW weights with
``epoch // t_reweight`` and DDC switches TLA on ``epoch + 1 > t_reweight``, both
with 0-indexed epochs, so with T0 = 160 of 200 epochs the last 40 epochs
(160..199) are re-weighted. The DDC paper's Algorithm 1 counts t in SGD steps
("if t < T0" for the first phase); the code switches at an epoch boundary,
which we follow.

  drw_weights   Cao et al. (LDAM-DRW): uniform before T0, effective-number
                weights (Cui et al., beta = 0.9999) normalised to sum C after.
  adrw_weights  Wang et al. (DDC, Alg. 1 line 7): uniform before T0,
                alpha_c proportional to pi_c^{-nu}, normalised to sum C, after.
  tla_gamma     DDC's truncated logit adjustment: the VS exponent gamma before
                T0, 0 after (beta_c = (n_c / n_max)^0 = 1; DDC calls the VS
                loss with ``use_multiplicative=False``).
  lwr_lambda    LWR Eq. 7: lambda(t) = lambda0 (1 - t / T)^2 with t the
                0-indexed (possibly fractional) epoch, so lambda = lambda0 at the
                start; t / T is clipped to [0, 1].
"""

import jax
import jax.numpy as jnp

from ltjax.losses.class_balanced import effective_number_weights
from ltjax.losses.cross_entropy import class_counts_array


def _counts(class_counts) -> jax.Array:
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1:
    raise ValueError(f'class_counts must be 1-D (one count per class); got shape {counts.shape}.')
  return class_counts_array(
      class_counts, counts.shape[0], jax.dtypes.canonicalize_dtype(jnp.float64)
  )


def drw_weights(class_counts, epoch, *, switch_epoch, beta: float = 0.9999) -> jax.Array:
  """Deferred re-weighting: ones before ``switch_epoch``, CB weights from it on.

  Args:
    class_counts: (C,) training counts n_c >= 1.
    epoch: 0-indexed epoch (int, float or traced scalar).
    switch_epoch: T0; the weights change at epoch >= T0.
    beta: effective-number beta of the deferred phase.

  Returns:
    (C,) weights summing to C, for ``class_weights=`` of a loss.
  """
  counts = _counts(class_counts)
  deferred = effective_number_weights(counts, beta)
  return jnp.where(jnp.asarray(epoch) >= switch_epoch, deferred, jnp.ones_like(deferred))


def adrw_weights(class_counts, epoch, *, switch_epoch, nu: float) -> jax.Array:
  """Aligned DRW: ones before ``switch_epoch``, pi_c^{-nu} (sum C) from it on.

  Args:
    class_counts: (C,) training counts n_c >= 1.
    epoch: 0-indexed epoch (int, float or traced scalar).
    switch_epoch: T0; the weights change at epoch >= T0.
    nu: exponent (DDC's ``--tro``; 0.05-0.25 in its scripts).

  Returns:
    (C,) weights summing to C, for ``class_weights=`` of a loss.
  """
  counts = _counts(class_counts)
  log_w = -nu * jnp.log(counts)  # pi^-nu up to the factor N^nu, removed below.
  deferred = jnp.exp(log_w - jnp.max(log_w))
  deferred = deferred / jnp.sum(deferred) * counts.shape[0]
  return jnp.where(jnp.asarray(epoch) >= switch_epoch, deferred, jnp.ones_like(deferred))


def tla_gamma(gamma, epoch, *, switch_epoch) -> jax.Array:
  """Truncated logit adjustment: ``gamma`` before ``switch_epoch``, 0 from it on.

  Args:
    gamma: the VS multiplicative exponent of the first phase.
    epoch: 0-indexed epoch (int, float or traced scalar).
    switch_epoch: T0.

  Returns:
    Scalar exponent for ``vs_loss(gamma=...)``.
  """
  gamma = jnp.asarray(gamma, jnp.promote_types(jnp.asarray(gamma).dtype, jnp.float32))
  return jnp.where(jnp.asarray(epoch) >= switch_epoch, jnp.zeros_like(gamma), gamma)


def lwr_lambda(epoch, *, total_epochs, lambda0: float = 1.0) -> jax.Array:
  """LWR's regulariser weight lambda0 (1 - t / T)^2 (paper Eq. 7).

  Args:
    epoch: t, 0-indexed epoch (int, float or traced scalar).
    total_epochs: T.
    lambda0: the weight at t = 0 (the paper uses 1).

  Returns:
    Scalar weight: lambda0 at t = 0, 0 at t = T.
  """
  t = jnp.clip(jnp.asarray(epoch, jnp.float32) / total_epochs, 0.0, 1.0)
  return lambda0 * (1.0 - t) ** 2
