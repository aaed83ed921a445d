"""Class-balanced losses from the effective number of samples (Cui et al., CVPR'19).

Effective number of class c: E_c = (1 - beta^{n_c}) / (1 - beta); the class
weight is 1 / E_c = (1 - beta) / (1 - beta^{n_c}) (Cui et al., Sec. 3-4). As in
every official code path (Cui's TF code, its PyTorch port used by weight
balancing, LDAM-DRW's DRW, DDC) the weights are renormalised to sum to C.
beta = 0 gives uniform weights, beta -> 1 the inverse class frequency (the limit
1/n_c is taken exactly at beta = 1; this is the "beta = 1" CB of Hasegawa &
Sato, ICLR'24, App. 7.3 Eq. 8, whose weights N_bar / N_y also sum to C).
See docs/references.md, 'Class-balanced loss'.

Variants of ``class_balanced_loss`` (w_i = w_{y_i}; t = one-hot(y); s = 2t - 1):

  'softmax'      w_i * CE(z_i, y_i)                   Cui's softmax CB loss
  'sigmoid'      w_i * sum_c BCE(z_ic, t_ic)           Cui's sigmoid CB loss
  'focal'        w_i * sum_c (1 - p_t)^gamma BCE       Cui's sigmoid focal CB loss,
                 with p_t = sigmoid(s * z) and BCE = -log p_t
  'softmax_bce'  w_i * mean_c BCE(softmax(z_i)_c, t_ic)
                 the weight-balancing demo's "softmax" CB loss
                 (ShadeAlsha/LTR-weight-balancing utils/class_balanced_loss.py,
                 docs/references.md, 'Weight balancing: stage 2'): binary
                 cross-entropy between the softmax probabilities and the
                 one-hot target, every entry of sample i weighted by w_{y_i};
                 the demo averages over all B*C entries, the 'batch' mean.

Reduction 'mean' (``weighted_reduction``, config ``loss.weighted_reduction``;
l_i is the variant's unweighted per-example loss above, before w_i):

  'weight_sum'  sum_i w_i l_i / sum_i w_i, PyTorch's weighted mean
                (docs/references.md, 'Conventions: weighted cross-entropy'), the
                library default for class-weighted losses; for 'softmax' this is
                ``nn.CrossEntropyLoss(weight=w)`` as used by LDAM-DRW and DDC.
  'batch'       what the official CB_loss computes, a plain mean of the weighted
                losses:
                  'softmax', 'focal', 'softmax_bce'   sum_i w_i l_i / B
                  'sigmoid'                           sum_i w_i l_i / (B C)
                so 'batch' = 'weight_sum' * sum_i w_i / B (/ (B C) for 'sigmoid').

What each official code computes ('mean' of a batch; w_i normalised as above):

  HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem@f8131b5
  (EWB), utils/class_balanced_loss.py ``CB_loss`` called with reduction='none'
  and averaged by ``error.mean()`` in utils/eval_funcs.py ``process_all_data``:
    'softmax'  w_i CE_i, shape (B,), mean                  = 'softmax' / B
    'sigmoid'  w_i BCE_ic, shape (B, C), mean over B*C     = 'sigmoid' / (B C)
    'focal'    w_i sum_c FL_ic, shape (B,), mean           = 'focal' / B
    'dr'       w_i DR_i, mean (dot_regression.py)          = / B
  ShadeAlsha/LTR-weight-balancing@e89f292 (WB), utils/class_balanced_loss.py
  ``CB_loss``:
    'softmax'  ``F.binary_cross_entropy(softmax(z), t, weight=w_i)``, mean over
               B*C                                         = 'softmax_bce' / B
    'sigmoid'  passes ``weights=`` to ``binary_cross_entropy_with_logits``, a
               TypeError: it never ran
    'focal'    sum_{i,c} w_i FL_ic / sum_{i,c} t_ic         = 'focal' / B
  Cui et al.'s TF code (richardaecn/class-balanced-loss@1d78572,
  src/cifar_main.py ``_tower_fn``): all three divide by B ('softmax' through
  ``tf.losses.softmax_cross_entropy``'s SUM_BY_NONZERO_WEIGHTS, 'sigmoid' and
  'focal' by the number of positive labels), so Cui's 'sigmoid' is C times
  EWB's, which 'batch' follows.

The focal modulator of the official codes, exp(-gamma t z - gamma log(1 +
exp(-z))) (EWB: ... - gamma (log(exp(z) + 1) - z)), equals (1 - p_t)^gamma but
overflows for z << 0 (EWB: z >> 0); here it is exp(gamma log_sigmoid(-s z)).

Cui et al. also initialise the classifier bias of the sigmoid/focal variants
to -log((1 - pi) / pi) with pi = 0.1; that is a head initialisation, not part
of the loss.

Numerics: sigmoid terms use log_sigmoid (stable for any finite logit);
log(1 - softmax) is computed exactly as logsumexp over the other classes for
each row's top class and as log(-expm1(log p)) (p <= 1/2) elsewhere, so no
clamping is needed (PyTorch's binary_cross_entropy clamps log at -100, which
only matters for p < e^-100).
"""

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.losses.cross_entropy import check_reduction
from ltjax.losses.cross_entropy import check_weighted_reduction
from ltjax.losses.cross_entropy import class_counts_array
from ltjax.losses.cross_entropy import compute_dtype
from ltjax.losses.cross_entropy import concrete_or_none
from ltjax.losses.cross_entropy import reduce_losses

VARIANTS = ('softmax', 'sigmoid', 'focal', 'softmax_bce')


def _effective_number_weights(counts: jax.Array, beta, normalize: bool) -> jax.Array:
  """Weights (1 - beta) / (1 - beta^n) for float (C,) counts >= 1."""
  beta_value = concrete_or_none(beta)
  if beta_value is not None:
    if not 0.0 <= float(beta_value) <= 1.0:
      raise ValueError(f'beta must be in [0, 1]; got {float(beta_value)}.')
    # log(beta) in float64 on the host: beta = 0.9999 is not exact in float32.
    with np.errstate(divide='ignore'):
      log_beta = float(np.log(np.float64(beta_value)))
  else:
    log_beta = jnp.log(beta)
  one_minus_beta_n = -jnp.expm1(counts * log_beta)  # 1 at beta = 0, 0 at beta = 1.
  one_minus_beta = -jnp.expm1(jnp.asarray(log_beta, counts.dtype))
  positive = one_minus_beta_n > 0
  weights = jnp.where(
      positive, one_minus_beta / jnp.where(positive, one_minus_beta_n, 1.0), 1.0 / counts
  )  # beta = 1: the limit 1 / n_c.
  if normalize:
    weights = weights / jnp.sum(weights) * counts.shape[0]
  return weights


def effective_number_weights(
    class_counts, beta: float = 0.9999, *, normalize: bool = True
) -> jax.Array:
  """Cui et al.'s class weights (1 - beta) / (1 - beta^{n_c}).

  Args:
    class_counts: (C,) training counts n_c >= 1.
    beta: in [0, 1]; 0 -> uniform, 1 -> 1 / n_c. May be traced.
    normalize: rescale to sum to C (every official code path does).

  Returns:
    (C,) float weights (float32, or float64 under x64).
  """
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1:
    raise ValueError(f'class_counts must be 1-D (one count per class); got shape {counts.shape}.')
  dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
  counts = class_counts_array(class_counts, counts.shape[0], dtype)
  return _effective_number_weights(counts, beta, normalize)


def log_one_minus_softmax(logits: jax.Array) -> jax.Array:
  """log(1 - softmax(logits)) elementwise, exact and finite for finite logits.

  Args:
    logits: (B, C) float, C >= 2.

  Returns:
    (B, C) array.
  """
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits, axis=-1)
  is_top = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes, dtype=jnp.bool_)
  # Not the top class: p <= 1/2, so -expm1(log p) in [1/2, 1] is well conditioned.
  rest = jnp.log(-jnp.expm1(jnp.where(is_top, -1.0, log_p)))
  # Top class: 1 - p_top = sum of the others' probabilities.
  top = jax.nn.logsumexp(
      jnp.where(is_top, -jnp.inf, logits), axis=-1, keepdims=True
  ) - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
  return jnp.where(is_top, top, rest)


def class_balanced_loss(
    logits: jax.Array,
    labels: jax.Array,
    *,
    class_counts,
    beta: float = 0.9999,
    variant: str = 'softmax',
    gamma: float = 2.0,
    reduction: str = 'none',
    weighted_reduction: str = 'weight_sum',
) -> jax.Array:
  """Class-balanced loss of Cui et al. (see the module docstring for variants).

  Args:
    logits: (B, C) float, C >= 2.
    labels: (B,) int in [0, C).
    class_counts: (C,) training counts n_c >= 1.
    beta: effective-number hyper-parameter in [0, 1].
    variant: 'softmax', 'sigmoid', 'focal' or 'softmax_bce'.
    gamma: focusing parameter of 'focal' (ignored otherwise).
    reduction: 'none' -> (B,) weighted per-example losses, 'mean' or 'sum' ->
      scalar.
    weighted_reduction: normaliser of 'mean': 'weight_sum' -> sum_i w_{y_i},
      'batch' -> the official CB_loss's (B; B * C for 'sigmoid').

  Returns:
    Per-example losses (B,) or their reduction, in the logits' dtype (at least
    float32).
  """
  check_reduction(reduction)
  check_weighted_reduction(weighted_reduction)
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r}; valid: {VARIANTS}.')
  logits = jnp.asarray(logits)
  dtype = compute_dtype(logits)
  logits = logits.astype(dtype)
  num_classes = logits.shape[-1]
  counts = class_counts_array(class_counts, num_classes, dtype)
  class_weights = _effective_number_weights(counts, beta, normalize=True)
  targets = jax.nn.one_hot(labels, num_classes, dtype=dtype)
  weights = jnp.sum(targets * class_weights, axis=-1)
  if variant == 'softmax':
    per_example = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
  elif variant in ('sigmoid', 'focal'):
    signed = (2.0 * targets - 1.0) * logits
    bce = -jax.nn.log_sigmoid(signed)  # -log p_t
    if variant == 'focal':
      bce = jnp.exp(gamma * jax.nn.log_sigmoid(-signed)) * bce  # (1 - p_t)^gamma
    per_example = jnp.sum(bce, axis=-1)
  else:  # 'softmax_bce'
    log_p = jax.nn.log_softmax(logits, axis=-1)
    bce = -(targets * log_p + (1.0 - targets) * log_one_minus_softmax(logits))
    per_example = jnp.mean(bce, axis=-1)
  losses = weights * per_example
  if weighted_reduction == 'weight_sum':
    return reduce_losses(losses, weights, reduction)
  if reduction == 'mean' and variant == 'sigmoid':  # EWB: the mean of the (B, C) entries.
    return jnp.sum(losses) / (losses.shape[0] * num_classes)
  return reduce_losses(losses, None, reduction)
