"""Softmax focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV'17).

Paper form (Eq. 4, with the alpha-balancing of Eq. 5 as optional class weights),
applied to the softmax probability of the true class p_y:

  FL_i = -alpha_{y_i} (1 - p_{y_i})^gamma log p_{y_i}.

This is the multi-class baseline of the long-tailed papers (LWR Table 3, LORT
Table 1, DDC's baselines). The sigmoid focal loss of Cui et al. is
``class_balanced_loss(variant='focal')``.

Official-code convention (``convention='ldam_code'``): the LDAM-DRW and DDC
repositories (``losses.py: FocalLoss``) compute l_i = w_{y_i} CE_i with
``F.cross_entropy(weight=w, reduction='none')``, take p = exp(-l_i) (which is
p_y only when unweighted), return (1 - p)^gamma l_i and average with a plain
mean over the batch. Without class weights both conventions agree exactly.

Numerics: log(1 - p_y) = logsumexp_{c != y} z_c - logsumexp_c z_c, so the
modulating factor exp(gamma log(1 - p_y)) and its gradient are finite for any
finite logits and any gamma >= 0 (including gamma < 1 with p_y -> 1).
Requires C >= 2.
"""

import jax
import jax.numpy as jnp

from ltjax.losses.cross_entropy import check_reduction
from ltjax.losses.cross_entropy import compute_dtype
from ltjax.losses.cross_entropy import example_weights
from ltjax.losses.cross_entropy import reduce_losses

CONVENTIONS = ('paper', 'ldam_code')


def log_one_minus_softmax_at(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log p_y, log(1 - p_y)) of softmax(logits) at the labels, both stable.

  Args:
    logits: (B, C) float, C >= 2.
    labels: (B,) int.

  Returns:
    Two (B,) arrays.
  """
  num_classes = logits.shape[-1]
  is_label = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
  lse = jax.nn.logsumexp(logits, axis=-1)
  log_p = jnp.sum(jnp.where(is_label, logits, 0.0), axis=-1) - lse
  log_rest = jax.nn.logsumexp(jnp.where(is_label, -jnp.inf, logits), axis=-1)
  return log_p, log_rest - lse


def _power_of_nonnegative(x: jax.Array, gamma) -> jax.Array:
  """x ** gamma for x >= 0 with a finite gradient at x = 0 (taken as 0 there)."""
  positive = x > 0
  safe = jnp.where(positive, x, 1.0)
  return jnp.where(positive, jnp.exp(gamma * jnp.log(safe)), jnp.where(gamma == 0, 1.0, 0.0))


def focal_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    gamma: float,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
    convention: str = 'paper',
) -> jax.Array:
  """Softmax focal loss -alpha_y (1 - p_y)^gamma log p_y.

  Args:
    logits: (B, C) float, C >= 2.
    labels: (B,) int in [0, C).
    gamma: focusing parameter >= 0; 0 gives (weighted) cross-entropy.
    class_weights: optional (C,) alpha. 'paper': per-example losses are
      multiplied by alpha[y_i] and 'mean' is PyTorch's weighted mean
      sum_i alpha_{y_i} FL_i / sum_i alpha_{y_i}. 'ldam_code': see the module
      docstring (p from the weighted CE, plain batch mean).
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
    convention: 'paper' (default) or 'ldam_code'.

  Returns:
    Per-example losses (B,) or their reduction, in the logits' dtype (at least
    float32).
  """
  check_reduction(reduction)
  if convention not in CONVENTIONS:
    raise ValueError(f'Unknown convention {convention!r}; valid: {CONVENTIONS}.')
  if isinstance(gamma, (int, float)) and gamma < 0:
    raise ValueError(f'gamma must be >= 0; got {gamma}.')
  logits = jnp.asarray(logits)
  dtype = compute_dtype(logits)
  logits = logits.astype(dtype)
  num_classes = logits.shape[-1]
  log_p, log_1mp = log_one_minus_softmax_at(logits, labels)
  weights = None
  if class_weights is not None:
    weights = example_weights(class_weights, labels, num_classes, dtype)
  if convention == 'paper' or weights is None:
    losses = -jnp.exp(gamma * log_1mp) * log_p
    if weights is not None:
      losses = losses * weights
    return reduce_losses(losses, weights, reduction)
  # LDAM-DRW / DDC code: l = w_y * CE, p = exp(-l), (1 - p)^gamma * l, plain mean.
  weighted_ce = -log_p * weights
  losses = _power_of_nonnegative(-jnp.expm1(-weighted_ce), gamma) * weighted_ce
  return reduce_losses(losses, None, reduction)
