"""Tests for ltjax.models: build_model and the backbones' parameter counts, shapes and dtypes."""

# The big networks are checked through ``jax.eval_shape`` only (no compute), so
# the file runs in seconds on two CPU cores; real forward passes are limited to
# the CIFAR ResNet-32.

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import tiny_config
from ltjax import models
from ltjax.models import resnet
from ltjax.models import resnet_cifar

# Input resolution each entry is meant for.
_INPUT_HW = {
    'resnet32': 32,
    'resnet32_ccsam': 32,
    'resnet34_cifar': 32,
    'resnet10': 224,
    'resnet50': 224,
    'resnet152': 224,
    'resnext50_32x4d': 224,
}
_FEATURE_DIM = {
    'resnet32': 64,
    'resnet32_ccsam': 64,
    'resnet34_cifar': 512,
    'resnet10': 512,
    'resnet50': 2048,
    'resnet152': 2048,
    'resnext50_32x4d': 2048,
}


def _build(name: str, num_classes: int, dtype=jnp.float32) -> nn.Module:
  config = ml_collections.ConfigDict({'name': name, 'head': 'linear'})
  return models.build_model(config, num_classes=num_classes, dtype=dtype)


def _abstract_init(model: nn.Module, shape):
  """Variables of ``model`` as ShapeDtypeStructs (no compute)."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _paths(tree) -> list[str]:
  return [
      '/'.join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
  ]


def test_all_entries_registered():
  assert set(_INPUT_HW) <= set(models.BACKBONES)


def test_unknown_model_lists_valid_names():
  config = tiny_config()
  config.model.name = 'resnet33'
  with pytest.raises(ValueError, match="Unknown model.name 'resnet33'.*'resnet32'"):
    models.build_model(config.model, 10)


# Totals including the linear classifier (weight + bias). torchvision counts
# BN weight + bias but not running stats, i.e. our `params` collection.
_RESNET34_IMAGENET_1000 = 21_797_672
# resnet34_cifar: the 3x3 stem has 3*3*3*64 conv weights instead of 7*7*3*64,
# and a 100-class fc (512*100 + 100) instead of 1000-class (512*1000 + 1000).
_RESNET34_CIFAR_100 = (
    _RESNET34_IMAGENET_1000
    - 7 * 7 * 3 * 64
    + 3 * 3 * 3 * 64
    - (512 * 1000 + 1000)
    + (512 * 100 + 100)
)
# LDAM ResNet-32 [5,5,5] derived layer by layer (convs + BN gamma/beta + fc):
#   stem 3*3*3*16 + 2*16                                        =     464
#   stage1 5 * (2 * 3*3*16*16 + 4*16)                           =  23,360
#   stage2 (3*3*16*32 + 3*3*32*32 + 4*32) + 4 * (2*3*3*32*32 + 4*32)
#                                                               =  88,192
#   stage3 (3*3*32*64 + 3*3*64*64 + 4*64) + 4 * (2*3*3*64*64 + 4*64)
#                                                               = 351,488
#   fc 64*10 + 10                                               =     650
_RESNET32_10 = 464_154
# CC-SAM drops one stage-3 block (2 * 3*3*64*64 + 4*64 = 73,984 parameters).
_RESNET32_CCSAM_10 = _RESNET32_10 - (2 * 3 * 3 * 64 * 64 + 4 * 64)
# ResNet-10 [1,1,1,1] (not in torchvision) derived layer by layer:
#   stem 7*7*3*64 + 128 = 9,536; stage1 73,984; stage2 230,144;
#   stage3 919,040; stage4 3,673,088; fc 512*1000 + 1000 = 513,000.
_RESNET10_1000 = 5_418_792


@pytest.mark.parametrize(
    'name, num_classes, expected',
    [
        ('resnet32', 10, _RESNET32_10),
        ('resnet32_ccsam', 10, _RESNET32_CCSAM_10),
        ('resnet34_cifar', 100, _RESNET34_CIFAR_100),
        ('resnet10', 1000, _RESNET10_1000),
        ('resnet50', 1000, 25_557_032),
        ('resnet152', 1000, 60_192_808),
        ('resnext50_32x4d', 1000, 25_028_904),
    ],
)
def test_param_count(name, num_classes, expected):
  hw = _INPUT_HW[name]
  variables = _abstract_init(_build(name, num_classes), (1, hw, hw, 3))
  assert _count(variables['params']) == expected


def test_param_count_resnet34_imagenet_stem():
  # torchvision's ResNet-34: the BasicBlock stack with the ImageNet stem.
  variables = _abstract_init(_build('resnet34', 1000), (1, 224, 224, 3))
  assert _count(variables['params']) == _RESNET34_IMAGENET_1000


@pytest.mark.parametrize('name', sorted(_INPUT_HW))
def test_feature_shape_and_bf16(name):
  hw = _INPUT_HW[name]
  for dtype in (jnp.float32, jnp.bfloat16):
    model = _build(name, num_classes=7, dtype=dtype)
    variables = _abstract_init(model, (2, hw, hw, 3))
    x = jax.ShapeDtypeStruct((2, hw, hw, 3), jnp.float32)
    logits, features = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    chex.assert_shape([features, logits], [(2, _FEATURE_DIM[name]), (2, 7)])
    assert features.dtype == dtype and logits.dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['batch_stats']))


def test_stage_names_and_last_stage_regex():
  params = _abstract_init(_build('resnet50', 10), (1, 64, 64, 3))['params']
  paths = _paths(params)
  assert 'backbone/stem_conv/kernel' in paths
  assert 'backbone/stage4_block2/conv3/kernel' in paths
  assert 'backbone/stage2_block0/shortcut_conv/kernel' in paths
  assert 'backbone/stage2_block1/shortcut_conv/kernel' not in paths
  # v1.5: the stride sits on the 3x3 conv; the first 1x1 of stage 2 sees 256.
  assert params['backbone']['stage2_block0']['conv1']['kernel'].shape == (1, 1, 256, 128)
  # ResNeXt grouped 3x3: 128 channels in 32 groups of 4 in stage 1.
  rx = _abstract_init(_build('resnext50_32x4d', 10), (1, 64, 64, 3))['params']
  assert rx['backbone']['stage1_block0']['conv2']['kernel'].shape == (3, 3, 4, 128)


def test_torchvision_padding():
  # 7x7/2 on 8x8 ones with a ones kernel: symmetric pad 3 makes output (0, 0)
  # cover rows/cols 0..3 (sum 16); flax 'SAME' would pad (2, 3) and cover
  # 0..4 (sum 25).
  conv = resnet._conv(1, 7, 2, dtype=jnp.float32, name='c')
  x = jnp.ones((1, 8, 8, 1))
  y = conv.apply({'params': {'kernel': jnp.ones((7, 7, 1, 1))}}, x)
  assert y.shape == (1, 4, 4, 1)
  assert float(y[0, 0, 0, 0]) == 16.0
  # The ImageNet stem halves twice: 224 -> 112 -> 56; a stride-2 3x3 conv on
  # 56 -> 28 with pad 1 on both sides.
  conv = resnet._conv(1, 3, 2, dtype=jnp.float32, name='c')
  y = conv.apply({'params': {'kernel': jnp.ones((3, 3, 1, 1))}}, x)
  assert float(y[0, 0, 0, 0]) == 4.0  # Rows/cols 0..1 (SAME: 0..2, sum 9).


def test_option_a_shortcut_pads_middle_channels():
  x = jnp.arange(1 * 4 * 4 * 16, dtype=jnp.float32).reshape(1, 4, 4, 16)
  y = resnet_cifar._option_a_shortcut(x, 32, 2)
  assert y.shape == (1, 2, 2, 32)
  np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
  assert not np.any(y[..., :8]) and not np.any(y[..., 24:])


@pytest.fixture(scope='module')
def resnet32_state():
  model = _build('resnet32', 10)
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  # jit: one compile is cheaper than eager op-by-op dispatch on CPU.
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0), x)
  return model, variables, x


def test_resnet32_option_a_has_no_shortcut_params(resnet32_state):
  _, variables, _ = resnet32_state
  paths = _paths(variables['params'])
  assert not any('shortcut' in p for p in paths)
  # The downsampling block holds only its two conv-BN pairs.
  block = variables['params']['backbone']['stage2_block0']
  assert sorted(block) == ['bn1', 'bn2', 'conv1', 'conv2']
  assert block['conv1']['kernel'].shape == (3, 3, 16, 32)


def test_resnet32_ccsam_has_one_block_fewer_in_stage3():
  def stage3_blocks(name):
    params = _abstract_init(_build(name, 10), (1, 32, 32, 3))['params']
    return sorted(k for k in params['backbone'] if k.startswith('stage3_'))

  full, ccsam = stage3_blocks('resnet32'), stage3_blocks('resnet32_ccsam')
  assert len(full) == 5 and len(ccsam) == 4
  assert set(ccsam) < set(full)


def test_resnet32_conv_init_is_kaiming_fan_in(resnet32_state):
  _, variables, _ = resnet32_state
  kernel = variables['params']['backbone']['stage2_block0']['conv1']['kernel']
  # fan_in = 3*3*16 = 144 -> std 0.118 (fan_out would give 0.083).
  assert np.std(kernel) == pytest.approx(math.sqrt(2 / 144), rel=0.1)


def test_resnet_conv_init_is_kaiming_fan_out():
  model = resnet.BACKBONES['resnet10']()
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  kernel = variables['params']['stem_conv']['kernel']
  # fan_out = 7*7*64 = 3136 -> std 0.025 (fan_in would give 0.117).
  assert np.std(kernel) == pytest.approx(math.sqrt(2 / 3136), rel=0.1)
  bn = variables['params']['stem_bn']
  np.testing.assert_array_equal(bn['scale'], 1.0)
  np.testing.assert_array_equal(bn['bias'], 0.0)


def test_resnet32_train_updates_batch_stats_eval_deterministic(resnet32_state):
  model, variables, x = resnet32_state
  (_, features), updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert features.shape == (4, 64)
  old = jax.tree.leaves(variables['batch_stats'])
  new = jax.tree.leaves(updates['batch_stats'])
  assert len(old) == len(new) > 0
  assert all(not np.allclose(a, b) for a, b in zip(old, new))
  # Momentum 0.9 (PyTorch 0.1): from 0 the running mean moves to 0.1 * the
  # batch mean of the stem conv output.
  kernel = variables['params']['backbone']['stem_conv']['kernel']
  stem = resnet_cifar._conv3x3(16, 1, jnp.float32, 'c')
  batch_mean = stem.apply({'params': {'kernel': kernel}}, x).mean((0, 1, 2))
  np.testing.assert_allclose(
      updates['batch_stats']['backbone']['stem_bn']['mean'], 0.1 * batch_mean, rtol=1e-4, atol=1e-6
  )

  apply_eval = jax.jit(functools.partial(model.apply, train=False))
  logits1, features1 = apply_eval(variables, x)
  logits2, features2 = apply_eval(variables, x)
  np.testing.assert_array_equal(logits1, logits2)
  np.testing.assert_array_equal(features1, features2)
  assert logits1.shape == (4, 10)


def test_bn_scale_init_starts_every_resnet_bn_scale_there():
  config = ml_collections.ConfigDict({'name': 'resnet10', 'head': 'linear', 'bn_scale_init': 0.07})
  model = models.build_model(config, 5)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  scales = [
      leaf
      for path, leaf in jax.tree_util.tree_leaves_with_path(variables['params'])
      if path[-1].key == 'scale'
  ]
  assert len(scales) == 1 + 2 * 4 + 3  # Stem, two per block, three shortcuts.
  for scale in scales:
    np.testing.assert_array_equal(scale, np.float32(0.07))
  default = models.build_model(ml_collections.ConfigDict({'name': 'resnet10', 'head': 'linear'}), 5)
  chex.assert_trees_all_equal(
      jax.tree.map(
          jnp.shape, default.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
      ),
      jax.tree.map(jnp.shape, variables),
  )
  with pytest.raises(ValueError, match='model.bn_scale_init'):
    models.build_model(
        ml_collections.ConfigDict({'name': 'small_cnn', 'head': 'linear', 'bn_scale_init': 0.5}), 5
    )


def _param_shapes(name, width=0, size=32):
  config = ml_collections.ConfigDict({'name': name, 'head': 'linear', 'width': width})
  model = models.build_model(config, 5)
  init = lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False)
  return jax.tree.map(jnp.shape, jax.eval_shape(init)['params'])


@pytest.mark.parametrize(
    'name, width, own_width, features_per_width',
    [('resnet50', 8, 64, 32), ('resnext50_32x4d', 16, 64, 32), ('resnet32', 4, 16, 4)],
)
def test_model_width_narrows_a_resnet_keeping_depth_and_names(
    name, width, own_width, features_per_width
):
  full, narrow = _param_shapes(name), _param_shapes(name, width)
  assert jax.tree.structure(full) == jax.tree.structure(narrow)  # Same layers, same names.
  assert narrow['head']['kernel'] == (features_per_width * width, 5)
  assert full['head']['kernel'] == (features_per_width * own_width, 5)
  assert narrow['backbone']['stem_conv']['kernel'][-1] == width
  chex.assert_trees_all_equal(full, _param_shapes(name, own_width))


def test_model_width_rejects_what_it_cannot_narrow():
  with pytest.raises(ValueError, match='model.width applies to the ResNets'):
    _param_shapes('small_cnn', 8)
  with pytest.raises(ValueError, match='raise model.width'):
    _param_shapes('resnext50_32x4d', 8)  # 8 planes * 4 / 64 rounds to no channels per group.


def test_resnext50_cifar_stem_keeps_the_resolution():
  model = models.build_model(
      ml_collections.ConfigDict({'name': 'resnext50_32x4d_cifar', 'head': 'linear'}), 100
  )
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), train=False)
  )
  kernel = shapes['params']['backbone']['stem_conv']['kernel']
  assert kernel.shape == (3, 3, 3, 64)  # 3x3 stride-1 stem, no max-pool.
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((2, 32, 32, 3)), train=False), shapes
  )
  assert logits.shape == (2, 100) and features.shape == (2, 2048)
