"""Classifier heads: features (B, d) -> logits (B, C).

Every head keeps its parameters under the module name ``head`` of
:class:`ltjax.models.Classifier`, so optimiser masks and perturbation subsets
can address the classifier by path. The kernel is stored as (d, C) throughout
(column c is the class vector w_c), so a stage-1 ``LinearHead`` checkpoint
drops into the re-training heads that share its parameter names.

  head             parameters (under ``head/``)             logits z_c
  LinearHead       kernel (d, C), bias (C,)                 w_c.f + b_c
  CosineHead       kernel (d, C) [, scale ()]               s cos(w_c, f)
  LWSHead          kernel (d, C), bias (C,), scale (C,)     s_c (w_c.f + b_c)
  TauNormHead      kernel (d, C), bias (C,)                 w_c.f / |w_c|^tau + b_c
  ETFHead          bias (C,) [, norm (C,)]                  r_c m_c.f + b_c, M fixed
  LWRHead          kernel, bias, projection/{hidden,output}/{kernel,bias}
                                                            w_c.f + b_c

The heads with a linear kernel (Linear, LWS, TauNorm, LWR) take ``head_init``,
the kernel's init (``HEAD_INITS``: PyTorch's nn.Linear default or LDAM-DRW's
Kaiming normal); the cosine and ETF heads have their own, fixed inits.

Sources (papers and official code; the code facts are collected in
docs/references.md):
  * Cosine classifier: LORT (Lu et al., arXiv:2403.00250) Table 1 "Vanilla
    Cosine"; LDAM's ``NormedLinear`` (kaidic/LDAM-DRW; docs/references.md,
    'LDAM-DRW'), whose logits are cosines and whose s = 30 lives in the loss.
  * LWS and tau-normalisation: Kang et al., ICLR'20 (Decoupling), as restated in
    LORT Table 1: g_i = c_i W_i^T f and h_i = (W_i / |W_i|^tau)^T f.
  * Simplex-ETF classifier: Hasegawa & Sato, ICLR'24 (EWB), App. 7.3
    Eq. (11), W = sqrt(E_W C/(C-1)) U (I_C - 1 1^T / C); official code facts in
    docs/references.md, 'EWB: recipe and official code'.
  * Projection MLP: LWR (Ha, Park, Choi) Sec. 3.3.2 -- the repulsion
    acts on class vectors passed through a trainable MLP with one hidden layer
    as wide as the class vector.
"""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torch.nn.functional.normalize's eps: x / max(|x|, eps).
_NORMALIZE_EPS = 1e-12


def torch_linear_init(fan_in: int):
  """PyTorch's default ``nn.Linear`` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The CC-SAM and weight-balancing code keep this default for the classifier
  (their kaiming init runs before the classifier is built), so it is ours too:
  ``head_init='torch'``, the default.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def kaiming_normal_linear_init(fan_in: int):
  """N(0, 2 / fan_in), untruncated: ``kaiming_normal_`` on an ``nn.Linear`` weight.

  PyTorch's defaults (mode 'fan_in', nonlinearity 'leaky_relu' with a = 0, so
  gain sqrt(2)) give std sqrt(2 / fan_in), fan_in = the Linear's in_features.
  The ResNet-32 of LDAM-DRW (kaidic/LDAM-DRW @2536330, models/resnet_cifar.py:
  ``_weights_init`` applied by ``self.apply`` after the classifier is built;
  DDC and Saddle ship the same file) re-initialises its ``nn.Linear`` weight
  so and leaves the bias at PyTorch's default.
  """
  std = math.sqrt(2.0 / fan_in)

  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.normal(key, shape, dtype)

  return init


# config.model.head_init -> builder(fan_in) of the initialiser of a linear head's kernel.
# The bias keeps PyTorch's default under every entry (LDAM-DRW's re-init leaves it).
HEAD_INITS = {
    'torch': torch_linear_init,
    'kaiming_normal': kaiming_normal_linear_init,
}


def linear_params(module: nn.Module, fan_in: int, num_classes: int, head_init: str = 'torch'):
  """``kernel`` (fan_in, C) and ``bias`` (C,) of ``module``, a PyTorch Linear transposed.

  Shared by every head that is a linear layer underneath, so their parameters
  keep LinearHead's names, shapes and init and load from its checkpoints. The
  kernel's init is ``HEAD_INITS[head_init]``; the bias is always PyTorch's
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  """
  if head_init not in HEAD_INITS:
    raise ValueError(f'Unknown head_init {head_init!r}; valid names: {sorted(HEAD_INITS)}.')
  kernel_init = HEAD_INITS[head_init](fan_in)
  kernel = module.param('kernel', kernel_init, (fan_in, num_classes))
  bias = module.param('bias', torch_linear_init(fan_in), (num_classes,))
  return kernel, bias


class LinearHead(nn.Module):
  """A linear classifier with bias, z = W f + b (computed in float32).

  Attributes:
    num_classes: C.
    head_init: the kernel's init, a key of ``HEAD_INITS`` (the bias is PyTorch's).
  """

  num_classes: int
  head_init: str = 'torch'

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    features = features.astype(jnp.float32)
    kernel, bias = linear_params(self, features.shape[-1], self.num_classes, self.head_init)
    return features @ kernel + bias


def _l2_normalize(x: jax.Array, axis: int) -> jax.Array:
  """x / max(|x|, 1e-12) along ``axis``, as ``torch.nn.functional.normalize``."""
  norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, _NORMALIZE_EPS)


# --------------------------------------------------------------------------
# Cosine classifier (LDAM's NormedLinear).
# --------------------------------------------------------------------------


def unit_column_uniform_init(key, shape, dtype=jnp.float32):
  """U(-1, 1) entries, then every column (class vector) rescaled to norm 1.

  LDAM's ``NormedLinear`` draws ``uniform_(-1, 1)`` and then
  ``renorm_(2, 1, 1e-5).mul_(1e5)``: each column of the (d, C) weight is
  clipped to norm 1e-5 and multiplied by 1e5, i.e. set to unit norm. We do
  the same in one step (the clip always binds: a U(-1, 1) column has norm far
  above 1e-5).
  """
  kernel = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
  return _l2_normalize(kernel, axis=0)


class CosineHead(nn.Module):
  """Cosine classifier: z_c = s * cos(w_c, f), no bias.

  LORT Table 1 "Vanilla Cosine", g_i = (W_i / |W_i|)^T (f / |f|); LDAM's
  ``NormedLinear`` (docs/references.md, 'LDAM-DRW'). With the default
  ``scale=1`` the logits are the cosines in [-1, 1]; LDAM multiplies them by
  s = 30 in its loss, so keep ``scale=1`` there. ``learn_scale=True`` makes s
  a trainable scalar ``head/scale`` initialised to ``scale`` (the
  learnable-temperature variant of cosine classifiers).

  Attributes:
    num_classes: C.
    scale: s, a fixed multiplier (or the initial value of the learned one).
    learn_scale: whether s is the trainable parameter ``head/scale``.

  Parameters: ``kernel`` (d, C), init ``unit_column_uniform_init`` (LDAM's);
  ``scale`` () when ``learn_scale``.
  """

  num_classes: int
  scale: float = 1.0
  learn_scale: bool = False

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """(B, d) features -> (B, C) float32 logits."""
    features = features.astype(jnp.float32)
    fan_in = features.shape[-1]
    kernel = self.param('kernel', unit_column_uniform_init, (fan_in, self.num_classes))
    cosines = _l2_normalize(features, axis=-1) @ _l2_normalize(kernel, axis=0)
    if self.learn_scale:
      scale = self.param('scale', nn.initializers.constant(self.scale), ())
      return scale * cosines
    # The default s = 1 adds no op (and leaves the logits exactly the cosines).
    return cosines if self.scale == 1.0 else self.scale * cosines


# --------------------------------------------------------------------------
# Learnable weight scaling (LWS).
# --------------------------------------------------------------------------


class LWSHead(nn.Module):
  """Learnable weight scaling, z_c = s_c (w_c . f + b_c) (Kang et al., 2020).

  LORT Table 1: g_i = c_i W_i^T f with c_i learnable (bias omitted there; we
  scale the whole linear output, bias included, as the Decoupling code's LWS
  classifier multiplies the ``fc`` output). ``kernel`` and ``bias`` have the
  names, shapes and init of :class:`LinearHead`, so stage 2 loads them from
  the stage-1 checkpoint and trains only ``head/scale`` (mask regex
  ``^head/scale$``), initialised to 1 so the head starts as the linear one.

  Parameters: ``kernel`` (d, C), ``bias`` (C,), ``scale`` (C,) init 1.
  ``head_init`` sets the kernel's init as for LinearHead (it matters only when
  the head starts fresh; a stage-1 checkpoint overrides it).
  """

  num_classes: int
  head_init: str = 'torch'

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """(B, d) features -> (B, C) float32 logits."""
    features = features.astype(jnp.float32)
    kernel, bias = linear_params(self, features.shape[-1], self.num_classes, self.head_init)
    scale = self.param('scale', nn.initializers.ones, (self.num_classes,))
    return scale * (features @ kernel + bias)


# --------------------------------------------------------------------------
# tau-normalisation.
# --------------------------------------------------------------------------


def tau_norm_scale(kernel: jax.Array, tau: float) -> jax.Array:
  """Per-class factors |w_c|^-tau of a (d, C) kernel; shape (C,).

  A zero column is treated as having norm 1e-12 (no division by zero).
  """
  norms = jnp.linalg.norm(jnp.asarray(kernel, jnp.float32), axis=0)
  return jnp.maximum(norms, _NORMALIZE_EPS) ** (-tau)


def tau_normalize(kernel: jax.Array, tau: float) -> jax.Array:
  """tau-normalisation w_c <- w_c / |w_c|^tau of a (d, C) kernel (Kang et al.).

  LORT Table 1: h_i = (W_i / |W_i|^tau)^T f. tau = 0 is the identity, tau = 1
  gives unit-norm class vectors; the weight-balancing demo's alternative uses
  tau = 1.9 (docs/references.md, 'Weight balancing: stage 2').

  Args:
    kernel: (d, C) classifier weights, column c = w_c.
    tau: the exponent.

  Returns:
    (d, C) float32 kernel with columns w_c / |w_c|^tau.
  """
  return jnp.asarray(kernel, jnp.float32) * tau_norm_scale(kernel, tau)


class TauNormHead(nn.Module):
  """Linear head evaluated with a tau-normalised kernel: z_c = w_c.f / |w_c|^tau + b_c.

  Same parameters as :class:`LinearHead` (``kernel``, ``bias``), so a trained
  linear head's checkpoint is used as is; ``tau`` is a module attribute, so a
  search varies it without retraining (see ``ltjax.eval.posthoc.search_tau_norm``).
  The bias is left untouched, as the weight-balancing ``Normalizer`` (which
  rescales ``fc.weight`` only) does. Training through this head with tau > 0
  trains the normalised classifier; normally it is an inference-time head.

  Attributes:
    num_classes: C.
    tau: the exponent (0 = the linear head, 1 = unit-norm class vectors).
    head_init: the kernel's init when the head starts fresh, as for LinearHead.
  """

  num_classes: int
  tau: float = 1.0
  head_init: str = 'torch'

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """(B, d) features -> (B, C) float32 logits."""
    features = features.astype(jnp.float32)
    kernel, bias = linear_params(self, features.shape[-1], self.num_classes, self.head_init)
    return features @ tau_normalize(kernel, self.tau) + bias


# --------------------------------------------------------------------------
# Fixed simplex-ETF classifier.
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _etf_kernel_np(feature_dim: int, num_classes: int, seed: int) -> np.ndarray:
  """The ETF matrix as a read-only float32 numpy array (cached per argument)."""
  if num_classes < 2:
    raise ValueError(f'A simplex ETF needs num_classes >= 2, got {num_classes}.')
  if feature_dim < num_classes:
    raise ValueError(
        f'A simplex-ETF classifier needs feature dimension d >= num_classes C '
        f'(U is a d x C matrix with orthonormal columns); got d={feature_dim}, '
        f'C={num_classes}. Use a backbone with wider features or another head.'
    )
  # Haar-random orthonormal U (d, C): QR of a Gaussian matrix with the signs of
  # R's diagonal moved into Q (Mezzadri 2007). Host numpy in float64 so that W
  # is the same on every platform and under every jit, a pure function of
  # (d, C, seed) -- nothing to checkpoint.
  rng = np.random.default_rng(seed)
  gaussian = rng.standard_normal((feature_dim, num_classes))
  q, r = np.linalg.qr(gaussian)
  u = q * np.where(np.diag(r) < 0, -1.0, 1.0)
  centring = np.eye(num_classes) - np.ones((num_classes, num_classes)) / num_classes
  kernel = math.sqrt(num_classes / (num_classes - 1)) * (u @ centring)
  kernel = kernel.astype(np.float32)
  kernel.flags.writeable = False  # shared through the cache
  return kernel


def etf_kernel(feature_dim: int, num_classes: int, seed: int = 0) -> np.ndarray:
  """The fixed simplex-ETF classifier W = sqrt(C/(C-1)) U (I_C - 1 1^T / C).

  Hasegawa & Sato, App. 7.3 Eq. (11) with E_W = 1. Columns (class vectors) have
  unit norm, |w_c|^2 = C/(C-1) (1 - 1/C) = 1, and pairwise cosines -1/(C-1):
  W^T W = C/(C-1) (I_C - 1 1^T / C). U is d x C with orthonormal columns, drawn
  from ``np.random.default_rng(seed)`` (the official code draws it from
  ``scipy.stats.ortho_group``; only its distribution matters).

  Args:
    feature_dim: d (>= num_classes).
    num_classes: C (>= 2).
    seed: the seed of U.

  Returns:
    (d, C) float32 numpy array (read-only; copy it to modify).

  Raises:
    ValueError: if d < C or C < 2.
  """
  return _etf_kernel_np(int(feature_dim), int(num_classes), int(seed))


class ETFHead(nn.Module):
  """Fixed simplex-ETF classifier with a trainable bias: z_c = r_c (w_c . f) + b_c.

  Hasegawa & Sato (EWB, ICLR'24) Sec. 5.2 / App. 7.3 Eq. (11); official
  ``ETFClassifier`` (docs/references.md, 'EWB: recipe and official code'). W is
  NOT a parameter: it is the deterministic :func:`etf_kernel` of (d, C,
  ``seed``), recomputed on the host when the module is traced and embedded as
  a constant. So it survives
  checkpointing without being saved (a TrainState of ``params`` and
  ``batch_stats`` suffices), needs no optimiser mask, and is the same under
  ``jit``, on every device and across re-inits with any PRNG key. Changing
  ``seed`` changes the classifier; keep it fixed for a run and its restarts.

  Attributes:
    num_classes: C (the feature dimension d must be >= C).
    seed: the seed of the random orthonormal U.
    train_norm: adds the per-class norms r_c as the parameter ``head/norm``
      (C,), init 1 (official ``train_etf_norm``); otherwise r_c = 1 (no
      parameter), all class vectors of unit norm.

  Parameters: ``bias`` (C,), init U(-1/d, 1/d) as the official code; ``norm``
  (C,) when ``train_norm``. The official recipe applies no weight decay to the
  classifier when the ETF is used (mask ``^head/`` out of the decay).
  """

  num_classes: int
  seed: int = 0
  train_norm: bool = False

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """(B, d) features -> (B, C) float32 logits."""
    features = features.astype(jnp.float32)
    fan_in = features.shape[-1]
    # The barrier stops XLA from constant-folding products with W when the
    # other operand is also constant (e.g. the all-ones cotangent of a sum):
    # for d x C = 2048 x 1000 that folding took seconds of compile time.
    kernel = jax.lax.optimization_barrier(
        jnp.asarray(etf_kernel(fan_in, self.num_classes, self.seed))
    )
    bound = 1.0 / fan_in
    bias = self.param(
        'bias',
        lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound),
        (self.num_classes,),
    )
    logits = features @ kernel
    if self.train_norm:
      logits = logits * self.param('norm', nn.initializers.ones, (self.num_classes,))
    return logits + bias


# --------------------------------------------------------------------------
# LWR projection MLP.
# --------------------------------------------------------------------------


class ProjectionMLP(nn.Module):
  """LWR's projection of class vectors: rows (C, d) -> (C, d_out).

  LWR Sec. 3.3.2: the repulsion is computed between class weight vectors
  "projected by trainable multi-layer perceptrons with one hidden layer whose
  hidden dimension is the same as an input logit weight vector's dimension".
  So: Dense(d) -> ReLU -> Dense(d_out), hidden width d = the class-vector
  dimension (the feature dimension). The paper leaves d_out open; the
  default ``features=None`` keeps it d. Both layers have biases and PyTorch's
  default Linear init (the paper's code is PyTorch).

  Attributes:
    features: d_out, or None for d_out = d.

  Parameters: ``hidden/kernel`` (d, d), ``hidden/bias`` (d,),
  ``output/kernel`` (d, d_out), ``output/bias`` (d_out,).
  """

  features: int | None = None

  @nn.compact
  def __call__(self, rows: jax.Array) -> jax.Array:
    """Projects class vectors given as ROWS: (C, d) float -> (C, d_out) float32.

    A (d, C) kernel goes in as ``kernel.T``; see :func:`project_kernel`.
    """
    rows = rows.astype(jnp.float32)
    width = rows.shape[-1]
    out = self.features or width
    hidden = nn.Dense(
        width,
        kernel_init=torch_linear_init(width),
        bias_init=torch_linear_init(width),
        name='hidden',
    )(rows)
    return nn.Dense(
        out, kernel_init=torch_linear_init(width), bias_init=torch_linear_init(width), name='output'
    )(nn.relu(hidden))


def project_kernel(projection_params, kernel: jax.Array) -> jax.Array:
  """Applies a :class:`ProjectionMLP` to the class vectors of a (d, C) kernel.

  Pure and differentiable in both arguments, so the LWR regulariser's gradient
  reaches the classifier kernel and the MLP.

  Args:
    projection_params: the MLP's params, ``{'hidden': {...}, 'output': {...}}``
      (e.g. ``params['head']['projection']`` of an :class:`LWRHead`).
    kernel: (d, C) classifier kernel, column c = w_c.

  Returns:
    (C, d_out) float32: row c is the projection of w_c.
  """
  d_out = projection_params['output']['kernel'].shape[-1]
  return ProjectionMLP(features=d_out).apply({'params': projection_params}, jnp.asarray(kernel).T)


def lwr_projected_weights(head_params) -> jax.Array:
  """Projected class vectors of an :class:`LWRHead`: (C, d_out) float32.

  Args:
    head_params: ``params['head']`` of a Classifier whose head is an LWRHead
      (keys ``kernel`` (d, C), ``bias``, ``projection``).
  """
  return project_kernel(head_params['projection'], head_params['kernel'])


class LWRHead(nn.Module):
  """A :class:`LinearHead` that also owns LWR's projection MLP.

  The logits are the linear head's, z = W f + b; the MLP (parameters
  ``head/projection/...``) is used only by the LWR regulariser through
  :func:`lwr_projected_weights`, and lives here so it is created, trained and
  checkpointed with the classifier it projects. It is initialised with the
  head (an init-only call) and unused by the forward pass.

  Attributes:
    num_classes: C.
    projection_features: the MLP's output width d_out (None = d).
    head_init: the classifier kernel's init, as for LinearHead. The MLP is not
      the classifier and keeps PyTorch's default under every value.

  Parameters: ``kernel`` (d, C), ``bias`` (C,) as LinearHead;
  ``projection/hidden/{kernel (d, d), bias (d,)}``,
  ``projection/output/{kernel (d, d_out), bias (d_out,)}``.
  """

  num_classes: int
  projection_features: int | None = None
  head_init: str = 'torch'

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    """(B, d) features -> (B, C) float32 logits."""
    features = features.astype(jnp.float32)
    kernel, bias = linear_params(self, features.shape[-1], self.num_classes, self.head_init)
    projection = ProjectionMLP(features=self.projection_features, name='projection')
    if self.is_initializing():
      projection(kernel.T)  # creates the MLP's parameters; output unused
    return features @ kernel + bias
