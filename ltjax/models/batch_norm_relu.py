"""BatchNorm, an optional residual addition and ReLU as one op with a closed-form backward.

``relu(batch_norm(y) + shortcut)`` in training mode (Ioffe & Szegedy, 2015),
with the statistics and parameters of ``flax.linen.BatchNorm``: batch mean
and biased variance over every axis but the last (``E[y^2] - E[y]^2``, as
flax's default), ``a = scale / sqrt(var + eps)``, and

    z = relu((y - mean) * a + bias + shortcut).

The backward pass is the textbook BatchNorm gradient through the ReLU mask
(the derivative of ReLU at 0 is 0, as ``jax.nn.relu``'s):

    g' = g * [z > 0]                    (also the shortcut's gradient)
    dbias = sum(g'),  dscale = sum(g' * (y - mean)) / sqrt(var + eps)
    dy = a * (g' - dbias / n - (y - mean) / sqrt(var + eps) * dscale / n)

with n the number of reduced elements. The values equal ``nn.BatchNorm``
followed by ``nn.relu`` within float rounding (tests compare values,
gradients and running averages against them). One difference: where rounding
makes ``E[y^2] - E[y]^2`` negative (|mean| / std above ~1e3 in float32) and the
clip at 0 applies, autodiff of flax drops the variance term of the gradient
and this backward keeps it; the forward values are meaningless there anyway.

Why not let autodiff derive it: on XLA:CPU, the ResNet-32 train step (batch
128) spends most of its time outside the convolutions otherwise. Autodiff of
BatchNorm leaves a dozen elementwise passes over each activation, and XLA's
fusion recomputes an effectively unary elementwise chain (``max(x, 0)``,
``x * a + b``) inside every consumer, including the transposed copy of a
block input that a convolution's weight gradient reads, so each copy
recomputed the residual stream of several blocks. Here the forward pass is two
reductions and one pass, the backward two reductions and one pass, and the
ReLU and the input gradient end in a select or an addition of two full-size
operands, which XLA materialises once instead of duplicating
(``benchmarks/README.md`` has the measurements).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _relu(pre: jax.Array) -> jax.Array:
  """``max(pre, 0)`` (NaN stays NaN) written as selects, which XLA does not duplicate."""
  return jnp.where(pre > 0, pre, jnp.where(pre <= 0, jnp.zeros_like(pre), pre))


def _statistics(y: jax.Array) -> tuple[jax.Array, jax.Array]:
  axes = tuple(range(y.ndim - 1))
  mean = jnp.mean(y, axes)
  var = jnp.maximum(jnp.mean(jnp.square(y), axes) - jnp.square(mean), 0.0)
  return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def batch_norm_relu(
    y: jax.Array, scale: jax.Array, bias: jax.Array, shortcut: jax.Array | None, epsilon: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(relu(BN(y) + shortcut), batch mean, batch variance) with batch statistics.

  ``y`` and ``shortcut``: (..., C) of one dtype, computed in at least float32
  and returned in ``y``'s dtype; ``scale``, ``bias``: (C,). ``shortcut`` may be
  None. The statistics are not differentiated (they feed running averages).
  """
  return _forward(y, scale, bias, shortcut, epsilon)[0]


def _compute_dtype(y: jax.Array):
  return jnp.promote_types(y.dtype, jnp.float32)  # float32, or float64 under x64.


def _normalize_relu(y, mean, inv, scale, bias, shortcut):
  """relu((y - mean) * inv * scale + bias + shortcut), computed in at least float32."""
  yf = y.astype(_compute_dtype(y))
  pre = (yf - mean) * (scale * inv) + bias
  if shortcut is not None:
    pre = pre + shortcut.astype(yf.dtype)
  return _relu(pre)


def _forward(y, scale, bias, shortcut, epsilon):
  mean, var = _statistics(y.astype(_compute_dtype(y)))
  inv = jax.lax.rsqrt(var + epsilon)
  z = _normalize_relu(y, mean, inv, scale, bias, shortcut).astype(y.dtype)
  return (z, mean, var), (y, z, mean, inv, scale, shortcut is not None)


def _backward(epsilon, residuals, cotangents):
  del epsilon
  y, z, mean, inv, scale, has_shortcut = residuals
  g = cotangents[0].astype(_compute_dtype(y))  # The statistics' cotangents are unused.
  axes = tuple(range(y.ndim - 1))
  n = np.prod(y.shape[:-1])
  yc = y.astype(g.dtype) - mean
  g_relu = jnp.where(z > 0, g, jnp.zeros_like(g))
  dbias = jnp.sum(g_relu, axes)
  dscale = jnp.sum(g_relu * yc, axes) * inv
  a = scale * inv
  # An addition of two full-size terms: XLA keeps it one materialised buffer.
  dy = g_relu * a + (yc * (-a * inv * dscale / n) - a * dbias / n)
  dshortcut = g_relu.astype(y.dtype) if has_shortcut else None
  return dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype), dshortcut


batch_norm_relu.defvjp(_forward, _backward)


class BatchNormReLU(nn.Module):
  """``nn.relu(nn.BatchNorm(...)(y) + shortcut)`` with the same variables as ``nn.BatchNorm``.

  Parameters ``scale`` and ``bias``, batch statistics ``mean`` and ``var``
  (flax's names and initial values), so checkpoints and parameter paths do
  not change. Defaults are PyTorch's BatchNorm2d (momentum 0.1 = flax 0.9,
  eps 1e-5). In inference mode (``use_running_average``) it is plain jnp,
  differentiated by autodiff. In training mode: reverse-mode differentiation
  only (``jax.jvp`` and ``jax.jacfwd`` do not apply to a custom VJP), and the
  updated running averages carry no gradient. Not supported (nothing in ltjax
  uses them): ``axis_name`` (pmap; jit-sharded batches need none), ``mask``,
  a feature axis other than the last, ``use_fast_variance=False``.
  """

  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array, shortcut: jax.Array | None = None) -> jax.Array:
    features = (y.shape[-1],)
    scale = self.param('scale', nn.initializers.ones, features, self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, features, self.param_dtype)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, features, jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, features, jnp.float32)
    # As flax: statistics of the input as given (at least float32), output in self.dtype.
    if shortcut is not None:
      shortcut = shortcut.astype(y.dtype)
    if self.use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
      return _normalize_relu(y, ra_mean.value, inv, scale, bias, shortcut).astype(self.dtype)
    z, mean, var = batch_norm_relu(y, scale, bias, shortcut, self.epsilon)
    if not self.is_initializing():
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return z.astype(self.dtype)


class UnfusedBatchNormReLU(nn.BatchNorm):
  """``nn.relu(nn.BatchNorm(...)(y) + shortcut)``, differentiated by autodiff.

  What ``BatchNormReLU`` replaces, with the same variables and arguments: the
  reference its tests and ``benchmarks/batch_norm_relu.py`` compare against.
  """

  @nn.compact
  def __call__(self, y: jax.Array, shortcut: jax.Array | None = None) -> jax.Array:  # pylint: disable=arguments-renamed
    out = super().__call__(y)
    return nn.relu(out if shortcut is None else out + shortcut)
