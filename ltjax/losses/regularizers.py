"""Regularisers: logit weight repulsion (LWR) and feature-norm regularisation (FR).

LWR (Ha, Park & Choi, Eq. 3-6 and Sec. 3.3). No official code
exists (docs/references.md, 'LWR: paper only'); this follows the paper. With
w_bar_i = w_i / ||w_i|| the L2-normalised classifier rows (or their
projections by the paper's MLP, which is a model component),
cos_ij = w_bar_i . w_bar_j and

  s_ij = 1[cos_ij > theta] cos_ij / tau                  (Eq. 5-6, Sec. 3.3.2)
  R_LWR = -sum_i log( exp(s_ii) / sum_j exp(s_ij) )       (Eq. 5)
        = sum_i [ logsumexp_j s_ij - s_ii ]
        = sum_i log(1 + sum_{j != i} exp(s_ij - s_ii)),

the last form (s_ii >= s_ij) being how it is computed.

Reading of Eq. 3/5: the numerator is the j = i term and the sum in the
denominator runs over all j, i included. This is the only reading under which
minimising R repels (a numerator at j != i would attract w_i to w_j), and it
matches Eq. 4's sum over j != i (the i = i term has zero gradient, below).
cos_ii = 1 is set exactly, so s_ii = 1[1 > theta] / tau = 1 / tau for theta < 1.
Pairs below the threshold keep s_ij = 0, i.e. exp(0) = 1 in the denominator
(the paper applies the indicator to the exponent, not to the term); theta = -1
disables the threshold and theta = 1 makes R the constant C log C (no
repulsion), as in Table 5.

Gradient (why it is the paper's Eq. 4). Let p_ij = softmax_j(s_ij). Then
dR/ds_ij = p_ij - [i = j]. The indicator is piecewise constant, so it has zero
derivative almost everywhere and s_ij = cos_ij / tau on its support; cos is
symmetric, so cos_ij (i != j) enters rows i and j:

  dR/dcos_ij = 1[cos_ij > theta] (p_ij + p_ji) / tau =: C_ij >= 0.

With d cos_ij / d w_i = (w_bar_j - cos_ij w_bar_i) / ||w_i|| and cos_ii = 1
constant,

  -grad_{w_i} R = -sum_{j != i} C_ij (w_bar_j - (w_bar_i . w_bar_j) w_bar_i) / ||w_i||,

which is Eq. 4 with its coefficients C_ij made explicit. Each term is
orthogonal to w_i: a descent step turns w_i away from the w_j it is too similar
to without changing its norm (to first order). The threshold needs no
stop-gradient: ``jnp.where`` differentiates the selected branch, which is the
derivative almost everywhere. The tests check this gradient against a direct
implementation of the formula above.

FR (Hasegawa & Sato, ICLR'24, App. 7.3 Eq. 5; official code
HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem
``utils/regularizers``, see docs/references.md, 'EWB: recipe and official
code'): (1 / B) sum_i ||f_i||^2 / 2 over the batch's penultimate features;
the recipe multiplies it by zeta = lambda_FR = 0.01.
"""

import jax
import jax.numpy as jnp

_NORM_EPS = 1e-12  # As torch.nn.functional.normalize: a zero row stays zero.


def lwr_regularizer(weights: jax.Array, *, theta: float = 0.4, tau: float = 0.1) -> jax.Array:
  """Logit weight repulsion R_LWR (paper Eq. 5 with temperature tau).

  R = sum_i [log sum_j exp(s_ij) - s_ii], s_ij = 1[cos_ij > theta] cos_ij / tau.

  Eq. 5 (and Eq. 3) leave the numerator's j unbound: the sum over i runs
  outside the log and the denominator's sum binds its own j. ltjax reads the
  numerator as j = i, each class picking itself out among all classes, for
  three reasons: (1) Eq. 4's gradient of R, -sum_{j != i} C_ij (w_j - (w_i .
  w_j) w_i) / |w_i|, is the gradient of this form, with C_ij the softmax weight
  of j in row i; (2) reading the numerator as a sum over every j instead adds
  -sum_ij s_ij, which pulls the class vectors together, the opposite of a
  repulsion; (3) Table 5's boundary cases hold: theta = -1 repels every pair,
  and theta = 1 switches every indicator off (cos_ii = 1 is not > 1), so R is
  the constant C log C with no gradient -- "equal to the baseline".

  Args:
    weights: (C, d) one row per class: the classifier weight vectors or their
      projections. A Flax ``Dense`` kernel is (d, C): pass ``kernel.T``.
    theta: repulsion threshold on the cosine similarity (0.4 in the paper).
    tau: temperature dividing the cosine similarities (0.1 in the paper).

  Returns:
    Scalar sum over classes, in the weights' dtype (at least float32).
  """
  weights = jnp.asarray(weights)
  if weights.ndim != 2:
    raise ValueError(f'weights must be (C, d), one row per class; got shape {weights.shape}.')
  weights = weights.astype(jnp.promote_types(weights.dtype, jnp.float32))
  num_classes = weights.shape[0]
  sq_norms = jnp.sum(weights * weights, axis=-1, keepdims=True)
  unit = weights / jnp.sqrt(jnp.maximum(sq_norms, _NORM_EPS**2))
  cos = jnp.matmul(unit, unit.T, precision=jax.lax.Precision.HIGHEST)
  eye = jnp.eye(num_classes, dtype=jnp.bool_)
  cos = jnp.where(eye, 1.0, cos)
  sim = jnp.where(cos > theta, cos, 0.0) / tau
  # s_ii >= s_ij for all j, so logsumexp_j s_ij - s_ii = log1p(sum_{j != i} exp(s_ij - s_ii))
  # with every exponent <= 0: no overflow for small tau, no cancellation when R is small.
  others = jnp.where(eye, 0.0, jnp.exp(sim - jnp.diagonal(sim)[:, None]))
  return jnp.sum(jnp.log1p(jnp.sum(others, axis=-1)))


def feature_norm_regularizer(features: jax.Array) -> jax.Array:
  """FR: mean over the batch of ||f_i||^2 / 2.

  Args:
    features: (B, ...) per-example features; all but the first axis are
      flattened into the norm.

  Returns:
    Scalar, in the features' dtype (at least float32).
  """
  features = jnp.asarray(features)
  features = features.astype(jnp.promote_types(features.dtype, jnp.float32))
  sq = jnp.sum(jnp.reshape(features * features, (features.shape[0], -1)), axis=-1)
  return 0.5 * jnp.mean(sq)
