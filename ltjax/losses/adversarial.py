"""CC-SAM's stage 2: classifier re-training on class-conditional adversarial features.

Zhou et al., "Class-Conditional Sharpness-Aware Minimization for Deep
Long-Tailed Recognition", CVPR 2023, stage 2 (§3.2, Eq. 12-14; official code
zzpustc/CC-SAM, train_cifar.py ``train_sample()``; see docs/references.md,
'CC-SAM: stage 2'). For each class c
present in the batch, with ell_i = CE(h(f_i), y_i) on the frozen backbone's
features f and g = d(mean_{i: y_i = c} ell_i)/df (zero outside class-c rows):

    f'_i = f_i + lambda * w_c * g_i / ||g||_F,     w_c = log(n_max / n_c + 0.01) / div
    ell_adv_i = w_c * CE(h(f'_i), y_i)

and the stage-2 loss is alpha * mean(ell_adv) + (1 - alpha) * mean(ell) with
alpha = min((epoch + 1) / T, cap). Because ell_i depends on f_i alone, row i
of g is (d ell_i / d f_i) / m_c and ||g||_F = sqrt(sum_{j in c} ||d ell_j /
d f_j||^2) / m_c, so the 1/m_c cancels and all classes are handled at once
with one backward pass and a segment sum -- no loop over classes. The
perturbation is a constant (the official code detaches it); the same w_c both
scales the perturbation and weights the adversarial loss.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses.cross_entropy import softmax_cross_entropy


def adversarial_class_weights(class_counts, *, div: float = 2.0) -> np.ndarray:
  """w_c = log(n_max / n_c + 0.01) / div: ~0.005 for the head, larger for the tail."""
  counts = np.asarray(class_counts, np.float64)
  return (np.log(counts.max() / counts + 0.01) / div).astype(np.float32)


def adversarial_feature_losses(
    features: jax.Array,
    labels: jax.Array,
    head_fn: Callable[[jax.Array], jax.Array],
    *,
    class_counts,
    weight: float = 1.0,
    div: float = 2.0,
) -> jax.Array:
  """Per-example ell_adv_i = w_{y_i} CE(h(f'_i), y_i) of CC-SAM's stage 2.

  Args:
    features: (B, d) features of the frozen backbone.
    labels: (B,) int.
    head_fn: features -> logits, the classifier being trained (live parameters).
    class_counts: (C,) training counts.
    weight: lambda, the perturbation size (the official adver_reg = 1).
    div: divisor of w_c (official: 2).

  Returns:
    (B,) adversarial losses (gradient flows to the classifier only: the
    perturbed features are constants).
  """
  w = jnp.asarray(adversarial_class_weights(class_counts, div=div))
  num_classes = w.shape[0]
  features = jax.lax.stop_gradient(features.astype(jnp.float32))
  per_example_grads = jax.grad(lambda f: jnp.sum(softmax_cross_entropy(head_fn(f), labels)))(
      features
  )
  sq = jnp.sum(per_example_grads**2, axis=-1)
  class_norm = jnp.sqrt(jax.ops.segment_sum(sq, labels, num_segments=num_classes))
  # The official code has no epsilon; a class whose gradient vanishes gets no push.
  direction = per_example_grads / jnp.maximum(class_norm[labels], 1e-12)[:, None]
  perturbed = jax.lax.stop_gradient(features + weight * w[labels][:, None] * direction)
  return w[labels] * softmax_cross_entropy(head_fn(perturbed), labels)


def adversarial_mix(epoch, *, total_epochs: int, cap: float) -> jax.Array:
  """alpha = min((epoch + 1) / T, cap), epoch 0-indexed within the stage."""
  return jnp.minimum((jnp.asarray(epoch, jnp.float32) + 1) / total_epochs, cap)
