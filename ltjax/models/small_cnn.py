"""A small convolutional backbone for 28x28 grey-scale inputs (Fashion-MNIST, MNIST).

Three 3x3 conv-BN-ReLU layers (32 at 28x28, pool, 64 at 14x14, pool, 128 at
7x7) and global average pooling give a 128-d feature (7.4M multiply-adds per
image). It is the offline default's backbone: big enough to
show long-tail effects on Fashion-MNIST-LT, small enough to train in minutes on
two CPU cores.

The 2x2 max-pool is :func:`max_pool_2x2`, a reshape + max with a hand-written
gradient: the same values and the same gradient as ``nn.max_pool(x, (2, 2),
strides=(2, 2))`` (bit for bit, ties included), without XLA:CPU's slow
reduce-window/select-and-scatter gradient (see benchmarks/README.md).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """``nn.max_pool(x, (2, 2), strides=(2, 2))`` (VALID) on (B, H, W, C).

  Each 2x2 window is scanned in row-major order keeping the first maximum
  (a later element replaces it only if strictly greater), which is how the
  gradient of reduce-window max picks its element (select-and-scatter with
  ``>=``) and what PyTorch's ``max_pool2d`` does. The forward pass returns that
  element; the backward pass sends the gradient to it with elementwise selects
  instead of XLA:CPU's select-and-scatter (~15x faster on CPU). The window
  index is saved, not recomputed by comparing against the max, so XLA
  recomputing ``x`` differently in another fusion cannot misroute it. An odd
  last row or column is dropped, as VALID pooling does. For finite inputs
  values and gradients equal ``nn.max_pool``'s, ties included.
  """
  return _max_pool_2x2_fwd(x)[0]


def _max_pool_2x2_fwd(x):
  b, h, w, c = x.shape
  win = x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c)
  best = win[:, :, 0, :, 0]
  index = jnp.zeros(best.shape, jnp.int8)
  for k, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
    candidate = win[:, :, dy, :, dx]
    greater = candidate > best
    best = jnp.where(greater, candidate, best)
    index = jnp.where(greater, jnp.int8(k), index)
  # The zero-size array only carries the input's (static) spatial shape.
  return best, (index, jnp.zeros((0, h, w), jnp.int8))


def _max_pool_2x2_bwd(residuals, g):
  index, hw = residuals
  h, w = hw.shape[1:]
  zero = jnp.zeros((), g.dtype)
  parts = [jnp.where(index == k, g, zero) for k in range(4)]
  rows = [jnp.stack(parts[0:2], axis=3), jnp.stack(parts[2:4], axis=3)]  # (B, H/2, W/2, 2, C)
  dx = jnp.stack(rows, axis=2)  # (B, H/2, 2, W/2, 2, C)
  b, _, _, _, _, c = dx.shape
  dx = dx.reshape(b, h // 2 * 2, w // 2 * 2, c)
  if h % 2 or w % 2:
    dx = jnp.pad(dx, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
  return (dx,)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


class SmallCNN(nn.Module):
  """Backbone: images (B, H, W, C) -> features (B, widths[-1])."""

  widths: tuple[int, ...] = (32, 64, 128)
  pool_after: tuple[int, ...] = (0, 1)  # Indices of layers followed by 2x2 max-pool.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = functools.partial(
        nn.Conv,
        kernel_size=(3, 3),
        use_bias=False,
        dtype=self.dtype,
        kernel_init=nn.initializers.kaiming_normal(),
    )
    # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.relu(norm()(conv(width)(x)))
      if i in self.pool_after:
        x = max_pool_2x2(x)
    return jnp.mean(x, axis=(1, 2))
