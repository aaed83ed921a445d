"""Softmax cross-entropy with PyTorch's class-weight and label-smoothing conventions."""

import jax
import jax.numpy as jnp

REDUCTIONS = ('none', 'mean', 'sum')


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                          label_smoothing: float = 0.0,
                          class_weights: jax.Array | None = None,
                          reduction: str = 'none') -> jax.Array:
  """Cross-entropy between softmax(logits) and (smoothed) one-hot labels.

  With label smoothing ``ls`` the target is (1 - ls) * onehot + ls / C, as
  ``torch.nn.CrossEntropyLoss(label_smoothing=ls)``.

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    label_smoothing: ls in [0, 1].
    class_weights: optional (C,) weights w. Per-example losses are multiplied
      by w[y_i]; the 'mean' reduction is PyTorch's weighted mean
      sum_i w[y_i] l_i / sum_i w[y_i] (shared/reference §0), not a plain mean.
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f'Unknown reduction {reduction!r}; valid: {REDUCTIONS}.')
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits)
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = (1.0 - label_smoothing) * targets + label_smoothing / num_classes
  losses = -jnp.sum(targets * log_probs, axis=-1)
  weights = None
  if class_weights is not None:
    weights = jnp.asarray(class_weights, jnp.float32)[labels]
    losses = losses * weights
  if reduction == 'none':
    return losses
  if reduction == 'sum':
    return jnp.sum(losses)
  denominator = jnp.sum(weights) if weights is not None else losses.shape[0]
  return jnp.sum(losses) / denominator
