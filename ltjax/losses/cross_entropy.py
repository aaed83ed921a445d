"""Softmax cross-entropy with PyTorch's class-weight and label-smoothing conventions.

Also holds the small helpers the other loss modules share (reduction, dtype,
validation of class counts, per-example class weights); they are not exported
from ``ltjax.losses``, except ``WEIGHTED_REDUCTIONS``.

Class-weighted means. The losses here take PyTorch's weighted mean; config
``loss.weighted_reduction`` (``WEIGHTED_REDUCTIONS``) chooses, for every loss the
objective gives class weights to, between (w_i = w_{y_i}, l_i unweighted)

  'weight_sum'  sum_i w_i l_i / sum_i w_i   ``torch.nn.CrossEntropyLoss(weight=w)``
                                            (LDAM-DRW, DDC); the default
  'batch'       sum_i w_i l_i / B           the plain mean of the weighted losses,
                                            as Cui et al.'s CB_loss in the weight
                                            balancing and EWB code (see
                                            class_balanced.py for its variants)

so 'batch' = 'weight_sum' * sum_i w_i / B; without weights both are the plain mean.
"""

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ('none', 'mean', 'sum')
# config loss.weighted_reduction: the normaliser of a class-weighted mean (module docstring).
WEIGHTED_REDUCTIONS = ('weight_sum', 'batch')


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    label_smoothing: float = 0.0,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """Cross-entropy between softmax(logits) and (smoothed) one-hot labels.

  The one softmax cross-entropy of ltjax: CE, LORT, the logit-adjusted losses
  (LA, Balanced Softmax, LDAM, VS) apply it to their adjusted logits, CC-SAM to
  its perturbed logits. (Focal and class-balanced losses weight the per-class
  log-probabilities differently and compute those themselves.) It computes in the logits'
  dtype, at least float32 (bfloat16 is upcast, float64 is kept, so float64
  inputs are differentiated in float64).

  With label smoothing ``ls`` the target is (1 - ls) * onehot + ls / C, as
  ``torch.nn.CrossEntropyLoss(label_smoothing=ls)``.

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    label_smoothing: ls in [0, 1] (may be traced).
    class_weights: optional (C,) weights w. Per-example losses are multiplied
      by w[y_i]; the 'mean' reduction is PyTorch's weighted mean
      sum_i w[y_i] l_i / sum_i w[y_i], not a plain mean (docs/references.md,
      'Conventions: weighted cross-entropy').
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  check_reduction(reduction)
  logits = logits.astype(compute_dtype(logits))
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  targets = jax.nn.one_hot(labels, num_classes, dtype=log_probs.dtype)
  if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):
    targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  losses = -jnp.sum(targets * log_probs, axis=-1)
  weights = None
  if class_weights is not None:
    weights = example_weights(class_weights, labels, num_classes, log_probs.dtype)
    losses = losses * weights
  return reduce_losses(losses, weights, reduction)


# ----------------------------------------------------------------------------
# Helpers shared by the losses of this package (not part of the public API).
# ----------------------------------------------------------------------------


def check_reduction(reduction: str) -> None:
  if reduction not in REDUCTIONS:
    raise ValueError(f'Unknown reduction {reduction!r}; valid: {REDUCTIONS}.')


def check_weighted_reduction(weighted_reduction: str) -> None:
  if weighted_reduction not in WEIGHTED_REDUCTIONS:
    raise ValueError(
        f'Unknown weighted_reduction {weighted_reduction!r}; valid: {WEIGHTED_REDUCTIONS}.'
    )


def compute_dtype(logits: jax.Array) -> jnp.dtype:
  """At least float32: bfloat16/float16 logits are upcast, float64 is kept."""
  return jnp.promote_types(jnp.asarray(logits).dtype, jnp.float32)


def concrete_or_none(x) -> np.ndarray | None:
  """``x`` as a numpy array when its value is known now, None under tracing."""
  try:
    return np.asarray(x)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def class_counts_array(class_counts, num_classes: int, dtype) -> jax.Array:
  """Validated (C,) class counts as a float array of ``dtype``.

  Shape is always checked; positivity (n_c >= 1, which the log-prior and the
  effective number need) is checked whenever the counts are concrete, i.e.
  not traced inside jit.
  """
  counts = jnp.asarray(class_counts)
  if counts.shape != (num_classes,):
    raise ValueError(
        f'class_counts has shape {counts.shape}; expected ({num_classes},), one '
        'count per class (the last axis of logits).'
    )
  concrete = concrete_or_none(class_counts)
  if concrete is not None and np.any(concrete < 1):
    raise ValueError(
        f'class_counts must be >= 1 for every class; got min {concrete.min()} '
        f'(classes {np.flatnonzero(concrete < 1).tolist()[:10]}).'
    )
  return counts.astype(dtype)


def reduce_losses(losses: jax.Array, weights: jax.Array | None, reduction: str) -> jax.Array:
  """'none' -> losses, 'sum' -> sum, 'mean' -> sum / sum(weights) (PyTorch) or plain mean."""
  if reduction == 'none':
    return losses
  if reduction == 'sum':
    return jnp.sum(losses)
  if weights is None:
    return jnp.mean(losses)
  return jnp.sum(losses) / jnp.sum(weights)


def example_weights(class_weights, labels: jax.Array, num_classes: int, dtype) -> jax.Array:
  """w[y_i] for each example: (B,) from (C,) class weights."""
  class_weights = jnp.asarray(class_weights, dtype)
  if class_weights.shape != (num_classes,):
    raise ValueError(f'class_weights has shape {class_weights.shape}; expected ({num_classes},).')
  return jnp.sum(jax.nn.one_hot(labels, num_classes, dtype=dtype) * class_weights, axis=-1)
