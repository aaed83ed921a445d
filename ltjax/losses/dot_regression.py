"""The dot-regression (DR) loss of a fixed classifier (Yang et al., NeurIPS 2022), as EWB runs it.

Yang et al., "Inducing Neural Collapse in Imbalanced Learning: Do We Really Need
a Learnable Classifier at the End of Deep Neural Network?" (NeurIPS 2022) train
a fixed simplex-ETF classifier with this loss; Hasegawa & Sato (EWB, ICLR 2024)
compare it with CE in Table 6 ('WD & ETF & DR', App. 7.5.4). This is the form of
EWB's official code
(HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem@f8131b5,
utils/class_balanced_loss.py ``DotRegressionLoss``, chosen by loss_type 'DR' in
utils/loss.py). With sg the stop-gradient (``.detach()`` there):

  z_i  = logits[i, y_i] = w_{y_i} . f_i + b_{y_i}   the true class's logit, bias included
  s_i  = sg(||f_i|| ||w_{y_i}||)
  DR_i = (z_i - s_i)^2 / (2 s_i)

f_i are the penultimate features as the classifier receives them (EWB
normalises nothing) and w_c the classifier's class vectors (``get_fc_weight()``:
r_c m_c for the ETF classifier, so ||w_c|| = 1 unless its norms train). The
reduction is the plain mean over the batch; EWB's class-balanced variant (CB_loss
'dr') multiplies DR_i by the CB weight w_{y_i} and also takes the plain mean,
i.e. ``loss.weighted_reduction='batch'`` (class_balanced.py).

Only the true-class logit enters, with dDR_i/dz_i = (z_i - s_i) / s_i: the loss
pulls w_y . f + b_y towards ||f|| ||w_y||, the value of a feature aligned with
its class vector (when b_y = 0).

Yang et al.'s own code (NeuralCollapseApplications/ImbalancedLearning@2ebb309,
methods.py ``dot_loss``, criterion 'reg_dot_loss') differs: its dot product has
no bias, it divides by sg(||h_i||) alone (the same when ||w_y|| = 1) and clamps
||h_i|| at 1e-8. EWB's form is followed: s_i = 0 (a zero feature or class
vector) gives an infinite loss there and here.
"""

import jax
import jax.numpy as jnp

from ltjax.losses.cross_entropy import check_reduction
from ltjax.losses.cross_entropy import compute_dtype
from ltjax.losses.cross_entropy import example_weights
from ltjax.losses.cross_entropy import reduce_losses


def dot_regression_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    features: jax.Array,
    class_vectors: jax.Array,
    class_weights: jax.Array | None = None,
    reduction: str = 'none',
) -> jax.Array:
  """EWB's dot-regression loss (z_y - s)^2 / (2 s), s = sg(||f|| ||w_y||).

  Args:
    logits: (B, C) float, the classifier's logits of ``features``.
    labels: (B,) int in [0, C).
    features: (B, d) the features the classifier received.
    class_vectors: (C, d) the classifier's class vectors w_c (rows), the
      transpose of a Flax (d, C) kernel.
    class_weights: optional (C,) weights w; per-example losses are multiplied
      by w[y_i] and 'mean' is PyTorch's weighted mean sum_i w_i DR_i / sum_i w_i.
    reduction: 'none' -> (B,), 'mean' or 'sum' -> scalar.

  Returns:
    Per-example losses (B,) or their reduction, in the logits' dtype (at least
    float32). Gradients flow through the logits only.
  """
  check_reduction(reduction)
  logits = jnp.asarray(logits)
  dtype = compute_dtype(logits)
  logits = logits.astype(dtype)
  features = jnp.asarray(features)
  class_vectors = jnp.asarray(class_vectors)
  batch, num_classes = logits.shape
  if features.ndim != 2 or features.shape[0] != batch:
    raise ValueError(f'features must be (B, d) with B = {batch}; got shape {features.shape}.')
  if class_vectors.shape != (num_classes, features.shape[1]):
    raise ValueError(
        f'class_vectors must be (C, d) = ({num_classes}, {features.shape[1]}), one row per '
        f'class; got shape {class_vectors.shape}.'
    )
  targets = jax.nn.one_hot(labels, num_classes, dtype=dtype)
  true_logit = jnp.sum(targets * logits, axis=-1)
  # The regression target is a constant of the step (EWB detaches it).
  feature_norms = jnp.linalg.norm(features.astype(dtype), axis=-1)
  class_norms = jnp.linalg.norm(class_vectors.astype(dtype), axis=-1)
  target = jax.lax.stop_gradient(feature_norms * jnp.sum(targets * class_norms, axis=-1))
  losses = jnp.square(true_logit - target) / (2.0 * target)
  weights = None
  if class_weights is not None:
    weights = example_weights(class_weights, labels, num_classes, dtype)
    losses = losses * weights
  return reduce_losses(losses, weights, reduction)
