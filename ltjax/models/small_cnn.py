"""A small convolutional backbone for 28x28 grey-scale inputs (Fashion-MNIST, MNIST).

Three 3x3 conv-BN-ReLU layers (32 at 28x28, pool, 64 at 14x14, pool, 128 at
7x7) and global average pooling give a 128-d feature (7.4M multiply-adds per
image). It is the offline default's backbone: big enough to
show long-tail effects on Fashion-MNIST-LT, small enough to train in minutes on
two CPU cores.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class SmallCNN(nn.Module):
  """Backbone: images (B, H, W, C) -> features (B, widths[-1])."""

  widths: tuple[int, ...] = (32, 64, 128)
  pool_after: tuple[int, ...] = (0, 1)  # Indices of layers followed by 2x2 max-pool.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), use_bias=False,
                             dtype=self.dtype,
                             kernel_init=nn.initializers.kaiming_normal())
    # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    x = x.astype(self.dtype)
    for i, width in enumerate(self.widths):
      x = nn.relu(norm()(conv(width)(x)))
      if i in self.pool_after:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return jnp.mean(x, axis=(1, 2))
