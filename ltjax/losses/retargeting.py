"""Logits retargeting, LORT (Lu et al., arXiv:2403.00250; code: bilibili/LOS).

Paper, Eq. 13: cross-entropy of softmax(z) against the retargeted label

  y~_i = 1 - delta + delta / K   if i = y,
         delta / K               otherwise,

with delta in [0, 1) close to 1 (0.98 on CIFAR100-LT, 0.99 on ImageNet-LT and
iNaturalist 2018), used to re-train the classifier of a frozen backbone. This
is exactly label smoothing with smoothing value delta, as the paper notes.

Official code (bilibili/LOS ``main_stage2.py``; docs/references.md, 'LORT:
paper and LOS code'): ``nn.CrossEntropyLoss(label_smoothing=ls)`` with
ls = 0.98, whose target (1 - ls) * onehot + ls / C is the paper's y~ with
delta = ls, so paper and code agree: ``delta`` here is
the code's ``ls``. The recipe details (stage 2 only, fc-only optimiser, lr 5e-4,
no weight decay, 20 cosine epochs, instance-balanced sampling) belong to the
config, not to the loss.
"""

import jax
import jax.numpy as jnp

from ltjax.losses.cross_entropy import compute_dtype
from ltjax.losses.cross_entropy import concrete_or_none
from ltjax.losses.cross_entropy import softmax_cross_entropy


def lort_loss(
    logits: jax.Array, labels: jax.Array, *, delta: float, reduction: str = 'none'
) -> jax.Array:
  """Cross-entropy with retargeted labels (label smoothing delta).

  Args:
    logits: (B, C) float.
    labels: (B,) int in [0, C).
    delta: the total negative probability, in [0, 1]; 0 gives plain CE.
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.

  Returns:
    Per-example losses (B,) or their reduction, in the logits' dtype (at least
    float32).
  """
  value = concrete_or_none(delta)
  if value is not None and not 0.0 <= float(value) <= 1.0:
    raise ValueError(f'delta must be in [0, 1] (0.98/0.99 in the paper); got {float(value)}.')
  logits = jnp.asarray(logits)
  logits = logits.astype(compute_dtype(logits))
  return softmax_cross_entropy(
      logits, labels, class_weights=None, reduction=reduction, label_smoothing=delta
  )
