"""The CIFAR ResNet-32 of LDAM-DRW, BBN and their successors (He et al., 2016, Sec. 4.2).

conv3x3(16) -> BN -> ReLU, then three stages of BasicBlocks with widths
16/32/64 and strides 1/2/2, then global average pooling to a 64-d feature.
Shortcuts are "option A" of the ResNet paper: where a block changes shape the
identity is subsampled (``x[:, ::2, ::2]``) and zero-padded in channels, so
shortcuts carry no parameters. This follows the ``resnet32`` of the LDAM-DRW
code (Cao et al., 2019), which DDC and VS-Loss reuse.

Entries of :data:`BACKBONES`:

  ``resnet32``        stage sizes [5, 5, 5] (6n+2 layers with n=5): LDAM-DRW,
                      DDC, VS-Loss. 464,154 parameters with a 10-class linear
                      head.
  ``resnet32_ccsam``  stage sizes [5, 5, 4]: the CC-SAM official code builds
                      ``layer3`` with ``num_blocks[2] - 1`` blocks, so its
                      "ResNet-32" has one block fewer in the last stage. We
                      keep it as a separate name to reproduce CC-SAM exactly.

Parameter paths: ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}/{conv1,bn1,
conv2,bn2}`` with s in 1..3 and b from 0, so "the last residual stage" is the
regex ``stage3_``.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ltjax.models.batch_norm_relu import BatchNormReLU

# PyTorch's ``kaiming_normal_`` default: fan_in, gain sqrt(2), untruncated
# normal (flax's ``kaiming_normal`` is truncated, hence the explicit form).
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def _norm_relu(train: bool, dtype: Any, name: str) -> BatchNormReLU:
  # BN + (shortcut) + ReLU in one op with a closed-form backward: nn.BatchNorm's
  # variables and values; ResNet-32's XLA:CPU train step is 1.6x faster than with
  # nn.BatchNorm + nn.relu (benchmarks/batch_norm_relu.py).
  # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5.
  return BatchNormReLU(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, name=name
  )


def _conv3x3(features: int, stride: int, dtype: Any, name: str) -> nn.Conv:
  # Explicit symmetric padding 1, as PyTorch's ``padding=1``.
  return nn.Conv(
      features,
      (3, 3),
      strides=(stride, stride),
      padding=((1, 1), (1, 1)),
      use_bias=False,
      dtype=dtype,
      kernel_init=_CONV_INIT,
      name=name,
  )


def _option_a_shortcut(x: jax.Array, features: int, stride: int) -> jax.Array:
  """Parameter-free shortcut: subsample spatially, zero-pad channels.

  The LDAM code pads ``planes // 4`` channels on each side (16 -> 32 -> 64), so
  the identity lands in the middle channels; we pad symmetrically to match.
  """
  if stride != 1:
    x = x[:, ::stride, ::stride, :]
  extra = features - x.shape[-1]
  if extra:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  return x


class BasicBlockA(nn.Module):
  """Two 3x3 conv-BN layers with an option-A (parameter-free) shortcut."""

  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = _conv3x3(self.features, self.stride, self.dtype, 'conv1')(x)
    y = _norm_relu(train, self.dtype, 'bn1')(y)
    y = _conv3x3(self.features, 1, self.dtype, 'conv2')(y)
    # relu(bn2(y) + shortcut)
    return _norm_relu(train, self.dtype, 'bn2')(
        y, _option_a_shortcut(x, self.features, self.stride)
    )


class CifarResNet(nn.Module):
  """Backbone: images (B, H, W, 3) -> features (B, 4 * width)."""

  stage_sizes: Sequence[int] = (5, 5, 5)
  width: int = 16  # Stem and first stage; the stages are width, 2 * width, 4 * width.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    x = _conv3x3(self.width, 1, self.dtype, 'stem_conv')(x)
    x = _norm_relu(train, self.dtype, 'stem_bn')(x)
    for s, num_blocks in enumerate(self.stage_sizes):
      width = self.width * 2**s
      for b in range(num_blocks):
        stride = 2 if s > 0 and b == 0 else 1
        x = BasicBlockA(width, stride, dtype=self.dtype, name=f'stage{s + 1}_block{b}')(
            x, train=train
        )
    return jnp.mean(x, axis=(1, 2))


# name -> constructor(dtype=...) of a backbone module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'resnet32': functools.partial(CifarResNet, stage_sizes=(5, 5, 5)),
    'resnet32_ccsam': functools.partial(CifarResNet, stage_sizes=(5, 5, 4)),
}
