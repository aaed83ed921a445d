"""torchvision-style ResNets and ResNeXts (He et al., 2016; Xie et al., 2017).

The layout is torchvision's ``resnet.py`` ("ResNet v1.5"): Bottleneck blocks
stride on the 3x3 conv, not the first 1x1; a projection shortcut (1x1 conv + BN)
wherever a block changes shape; convs are initialised Kaiming-normal with
fan_out, BN with scale 1 and bias 0. Groups and ``width_per_group`` give the
ResNeXt bottleneck (width = planes * width_per_group / 64 * groups).

Two stems:

  ``imagenet``  7x7/2 conv(64) + BN + ReLU + 3x3/2 max-pool (padding 1).
  ``cifar``     3x3/1 conv(64) + BN + ReLU, no max-pool: the "ResNet-34" of
                weight balancing (Alshammari et al., 2022) and LORT for 32x32
                inputs; the last stage sees a 4x4 map.

Entries of :data:`BACKBONES` (feature dim 512 for BasicBlock, 2048 for
Bottleneck):

  ``resnet10``          BasicBlock [1, 1, 1, 1]: the ImageNet-LT ResNet-10 of
                        Decoupling (Kang et al., 2020) and BALMS.
  ``resnet34_cifar``    BasicBlock [3, 4, 6, 3], cifar stem.
  ``resnet34``          BasicBlock [3, 4, 6, 3] (torchvision's ResNet-34).
  ``resnet50``          Bottleneck [3, 4, 6, 3].
  ``resnet152``         Bottleneck [3, 8, 36, 3].
  ``resnext50_32x4d``   Bottleneck [3, 4, 6, 3], 32 groups of width 4.
  ``resnext50_32x4d_cifar``  the same with the cifar stem.

Parameter paths: ``stem_conv``, ``stem_bn``, ``stage{s}_block{b}/{conv1,bn1,
conv2,bn2[,conv3,bn3][,shortcut_conv,shortcut_bn]}`` with s in 1..4 and b from
0, so "the last residual stage" is the regex ``stage4_``.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision: kaiming_normal_(mode='fan_out', nonlinearity='relu'), untruncated.
_CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _conv(
    features: int, kernel: int, stride: int = 1, groups: int = 1, *, dtype: Any, name: str
) -> nn.Conv:
  # Explicit symmetric padding kernel // 2, as torchvision. Flax 'SAME' pads
  # (0, 1) rather than (1, 1) for a stride-2 3x3 conv on even sizes, which
  # shifts the sampling grid by one pixel.
  pad = kernel // 2
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      feature_group_count=groups,
      use_bias=False,
      dtype=dtype,
      kernel_init=_CONV_INIT,
      name=name,
  )


def _norm(train: bool, dtype: Any, name: str, scale: float = 1.0) -> nn.BatchNorm:
  # PyTorch BatchNorm2d defaults: momentum 0.1 (= flax 0.9), eps 1e-5. Flax's
  # default init (scale 1, bias 0) is torchvision's; ``scale`` starts every BN
  # scale at another value (EWB's "fixed BN" analysis, model.bn_scale_init).
  extra = {} if scale == 1.0 else {'scale_init': nn.initializers.constant(scale)}
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      dtype=dtype,
      name=name,
      **extra,
  )


class BasicBlock(nn.Module):
  """3x3 conv-BN-ReLU, 3x3 conv-BN, plus shortcut, ReLU. Output = planes."""

  planes: int
  stride: int = 1
  groups: int = 1  # Only 1, as in torchvision; kept for a uniform signature.
  width_per_group: int = 64
  dtype: Any = jnp.float32
  bn_scale: float = 1.0  # Initial value of every BN scale.

  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.groups != 1 or self.width_per_group != 64:
      raise ValueError('BasicBlock supports only groups=1, width_per_group=64.')
    conv = functools.partial(_conv, dtype=self.dtype)
    y = conv(self.planes, 3, self.stride, name='conv1')(x)
    y = nn.relu(_norm(train, self.dtype, 'bn1', self.bn_scale)(y))
    y = conv(self.planes, 3, name='conv2')(y)
    y = _norm(train, self.dtype, 'bn2', self.bn_scale)(y)
    return nn.relu(y + _shortcut(self, x, train))


class Bottleneck(nn.Module):
  """1x1 reduce, 3x3 (strided, grouped), 1x1 expand; output = 4 * planes."""

  planes: int
  stride: int = 1
  groups: int = 1
  width_per_group: int = 64
  dtype: Any = jnp.float32
  bn_scale: float = 1.0  # Initial value of every BN scale.

  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
    if width < 1:
      raise ValueError(
          f'A bottleneck of {self.planes} planes with {self.groups} groups of '
          f'width_per_group={self.width_per_group} has no channels: raise model.width.'
      )
    conv = functools.partial(_conv, dtype=self.dtype)
    y = conv(width, 1, name='conv1')(x)
    y = nn.relu(_norm(train, self.dtype, 'bn1', self.bn_scale)(y))
    # v1.5: the stride sits on the 3x3 conv (better accuracy than v1's 1x1).
    y = conv(width, 3, self.stride, self.groups, name='conv2')(y)
    y = nn.relu(_norm(train, self.dtype, 'bn2', self.bn_scale)(y))
    y = conv(self.planes * self.expansion, 1, name='conv3')(y)
    y = _norm(train, self.dtype, 'bn3', self.bn_scale)(y)
    return nn.relu(y + _shortcut(self, x, train))


def _shortcut(block: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """Identity, or a 1x1 conv + BN projection where the shape changes.

  Called inside the block's compact ``__call__``, so the submodules are the
  block's children ``shortcut_conv`` / ``shortcut_bn``.
  """
  out = block.planes * block.expansion
  if block.stride == 1 and x.shape[-1] == out:
    return x
  x = _conv(out, 1, block.stride, dtype=block.dtype, name='shortcut_conv')(x)
  return _norm(train, block.dtype, 'shortcut_bn', block.bn_scale)(x)


class ResNet(nn.Module):
  """Backbone: images (B, H, W, 3) -> features (B, 8 * width * block.expansion)."""

  block: type[nn.Module]
  stage_sizes: Sequence[int]
  stem: str = 'imagenet'  # 'imagenet' or 'cifar'.
  groups: int = 1
  width_per_group: int = 64
  dtype: Any = jnp.float32
  bn_scale: float = 1.0  # Initial value of every BN scale.
  # Channels of the stem and the first stage's planes (doubling per stage). 64 is the
  # architecture; narrower copies (model.width) keep its depth and layout for quick runs.
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = x.astype(self.dtype)
    if self.stem == 'imagenet':
      x = _conv(self.width, 7, 2, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(_norm(train, self.dtype, 'stem_bn', self.bn_scale)(x))
      # Pads with -inf, as PyTorch's MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == 'cifar':
      x = _conv(self.width, 3, 1, dtype=self.dtype, name='stem_conv')(x)
      x = nn.relu(_norm(train, self.dtype, 'stem_bn', self.bn_scale)(x))
    else:
      raise ValueError(f"Unknown stem {self.stem!r}; valid: 'imagenet', 'cifar'.")
    for s, num_blocks in enumerate(self.stage_sizes):
      for b in range(num_blocks):
        stride = 2 if s > 0 and b == 0 else 1
        x = self.block(
            self.width * 2**s,
            stride,
            groups=self.groups,
            width_per_group=self.width_per_group,
            dtype=self.dtype,
            bn_scale=self.bn_scale,
            name=f'stage{s + 1}_block{b}',
        )(x, train=train)
    return jnp.mean(x, axis=(1, 2))


# name -> constructor(dtype=...) of a backbone module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'resnet10': functools.partial(ResNet, block=BasicBlock, stage_sizes=(1, 1, 1, 1)),
    'resnet34_cifar': functools.partial(
        ResNet, block=BasicBlock, stage_sizes=(3, 4, 6, 3), stem='cifar'
    ),
    # torchvision's ResNet-34 (ImageNet stem): EWB's backbone for mini-ImageNet-LT at 224 px.
    'resnet34': functools.partial(ResNet, block=BasicBlock, stage_sizes=(3, 4, 6, 3)),
    'resnet50': functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3)),
    'resnet152': functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 8, 36, 3)),
    # ResNeXt-50 with the CIFAR stem (3x3 stride-1 conv, no max-pool), as weight balancing's
    # CIFAR ResNets; EWB Table 10's ResNeXt-50 on CIFAR-100-LT.
    'resnext50_32x4d_cifar': functools.partial(
        ResNet,
        block=Bottleneck,
        stage_sizes=(3, 4, 6, 3),
        groups=32,
        width_per_group=4,
        stem='cifar',
    ),
    'resnext50_32x4d': functools.partial(
        ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3), groups=32, width_per_group=4
    ),
}
