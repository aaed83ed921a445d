"""Logit-adjusted losses: Balanced Softmax, logit adjustment, VS (LA/CDT), LDAM.

All are cross-entropy of class-dependently adjusted logits, members of the
vector-scaling (VS) family of Wang et al. (DDC, NeurIPS'23, Eq. 3):

  L_VS(z, y) = -alpha_y log softmax(beta * z + Delta)_y,

with alpha the optional class weights (the weighted mean of PyTorch's
``CrossEntropyLoss(weight=alpha)`` for 'mean', as every official code path
here), beta multiplicative and Delta additive adjustments (n_c training counts,
pi_c = n_c / N, n_max = max_c n_c):

  balanced_softmax_loss  beta = 1, Delta_c = log n_c
                         (Ren et al., NeurIPS'20; BalancedSoftmaxLoss.py: CE(z + log n))
  logit_adjusted_loss    beta = 1, Delta_c = tau log pi_c           (Menon et al., ICLR'21)
  vs_loss                beta_c = (n_c / n_max)^gamma, Delta_c = tau log pi_c
                         (Kini et al., NeurIPS'21; DDC Eq. 3). gamma = 0 -> LA,
                         tau = 0 -> CDT (Ye et al.), gamma = tau = 0 -> CE, and
                         gamma = 0, tau = 1 -> Balanced Softmax (log pi_c and
                         log n_c differ by the constant log N, which softmax
                         ignores).
  ldam_loss              CE(s * (z - m_y e_y)) with m_c proportional to
                         n_c^{-1/4}, max_c m_c = max_margin (Cao et al.,
                         NeurIPS'19; kaidic/LDAM-DRW losses.py; see
                         docs/references.md, 'LDAM-DRW').

VS conventions (wang22ti/DDC and orparask/VS-Loss ``losses.py``; see
docs/references.md, 'DDC: losses and schedules' and 'VS loss'): the official
code writes the scaling as z_c / Delta_c with
Delta_c = (1 / n_c)^gamma / min_k (1 / n_k)^gamma =
(n_max / n_c)^gamma; that is the same beta_c = 1 / Delta_c of the paper, applied
here as a product. TLA (DDC's truncated LA) sets gamma = 0 from the switch epoch
on: pass ``gamma=tla_gamma(gamma, epoch, switch_epoch=...)`` (ltjax.losses.
schedules); ADRW/DRW weights go in ``class_weights``.

LDAM conventions: the margin is subtracted from the true-class logit before
the scale s (so the margin in scaled logits is s * m_y), the logits are meant
to be cosines from a normalised head (``NormedLinear``), and the margins are
m_c = max_margin * (n_min / n_c)^{1/4}, i.e. the paper's C / n_c^{1/4} with
C chosen so the largest margin is max_margin (0.5 in the code, 0.3 for iNat).

Numerics: everything goes through log_softmax; the adjustments are finite for
counts >= 1 (checked when the counts are concrete).
"""

import jax
import jax.numpy as jnp

from ltjax.losses.cross_entropy import class_counts_array
from ltjax.losses.cross_entropy import compute_dtype
from ltjax.losses.cross_entropy import softmax_cross_entropy


def _prepare(logits, class_counts):
  logits = jnp.asarray(logits)
  dtype = compute_dtype(logits)
  logits = logits.astype(dtype)
  counts = class_counts_array(class_counts, logits.shape[-1], dtype)
  return logits, counts


def log_prior(class_counts) -> jax.Array:
  """log pi_c = log(n_c / sum_k n_k) for (C,) counts >= 1."""
  counts = jnp.asarray(class_counts)
  counts = counts.astype(jnp.promote_types(counts.dtype, jnp.float32))
  return jnp.log(counts) - jnp.log(jnp.sum(counts))


def ldam_margins(class_counts, max_margin: float = 0.5) -> jax.Array:
  """LDAM margins m_c = max_margin * (n_min / n_c)^{1/4}, shape (C,)."""
  counts = jnp.asarray(class_counts)
  counts = counts.astype(jnp.promote_types(counts.dtype, jnp.float32))
  return max_margin * (jnp.min(counts) / counts) ** 0.25


def balanced_softmax_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """Balanced Softmax: CE(z + log n_c).

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    class_counts: (C,) training counts n_c >= 1.
    class_weights: optional (C,) weights alpha (PyTorch weighted mean).
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  logits, counts = _prepare(logits, class_counts)
  return softmax_cross_entropy(
      logits + jnp.log(counts), labels, class_weights=class_weights, reduction=reduction
  )


def logit_adjusted_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts,
    tau: float = 1.0,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """Logit-adjusted loss: CE(z + tau log pi_c).

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    class_counts: (C,) training counts n_c >= 1.
    tau: adjustment strength (1 is Fisher-consistent for the balanced error).
    class_weights: optional (C,) weights alpha (PyTorch weighted mean).
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  logits, counts = _prepare(logits, class_counts)
  return softmax_cross_entropy(
      logits + tau * log_prior(counts), labels, class_weights=class_weights, reduction=reduction
  )


def vs_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts,
    gamma: float,
    tau: float,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """Vector-scaling loss: CE(z_c (n_c / n_max)^gamma + tau log pi_c).

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    class_counts: (C,) training counts n_c >= 1.
    gamma: multiplicative exponent (0 -> no scaling); may be traced, e.g.
      ``tla_gamma(gamma, epoch, switch_epoch=T0)``.
    tau: additive strength (0 -> no additive term).
    class_weights: optional (C,) weights alpha (PyTorch weighted mean), e.g.
      ``drw_weights`` or ``adrw_weights``.
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  logits, counts = _prepare(logits, class_counts)
  scale = (counts / jnp.max(counts)) ** gamma
  return softmax_cross_entropy(
      logits * scale + tau * log_prior(counts),
      labels,
      class_weights=class_weights,
      reduction=reduction,
  )


def ldam_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts,
    max_margin: float = 0.5,
    scale: float = 30.0,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """LDAM: CE(scale * (z - m_y e_y)), m_c = max_margin (n_min / n_c)^{1/4}.

  Args:
    logits: (B, C) float; cosines from a normalised head in the paper's setup.
    labels: (B,) int in [0, C).
    class_counts: (C,) training counts n_c >= 1.
    max_margin: the largest margin (of the rarest class).
    scale: s, applied after subtracting the margin.
    class_weights: optional (C,) weights (LDAM-DRW's DRW weights; PyTorch
      weighted mean).
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  logits, counts = _prepare(logits, class_counts)
  margins = ldam_margins(counts, max_margin)
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  return softmax_cross_entropy(
      scale * (logits - targets * margins), labels, class_weights=class_weights, reduction=reduction
  )
