"""Tests for ltjax.train.feature_cache: stage 2 on cached features equals the backbone path."""

import os
import shutil

import jax
import numpy as np
import pytest

from helpers import read_rows
from helpers import tiny_config
from ltjax import train


def test_feature_cache_stage2_equals_the_backbone_path(tmp_path):
  """Frozen BN, no augmentation: the head trained on cached features matches."""
  config = tiny_config(num_train_steps=6, eval_every_epochs=1)
  config.eval.flip_tta = True
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.sampler = 2, 'reinit', 'class_aware'
  s2.bn, s2.augment = 'frozen', 'none'
  s2.loss.adversarial_weight, s2.loss.adversarial_cap = 1.0, 0.3  # CC-SAM stage 2.
  s2.optim.lr, s2.optim.weight_decay = 0.05, 0.01
  s2.feature_cache = 'on'
  cached_dir, plain_dir = str(tmp_path / 'cached'), str(tmp_path / 'plain')
  cached, cached_results = train.train_and_evaluate(config, cached_dir)
  shutil.copytree(cached_dir, plain_dir, ignore=shutil.ignore_patterns('stage2'))
  config.stage2.feature_cache = 'off'
  plain, plain_results = train.train_and_evaluate(config, plain_dir)  # Stage 1 is complete.
  np.testing.assert_allclose(
      jax.device_get(cached.params['head']['kernel']),
      jax.device_get(plain.params['head']['kernel']),
      atol=1e-5,
  )
  np.testing.assert_allclose(
      cached_results['per_class_accuracy'], plain_results['per_class_accuracy'], atol=1e-3
  )
  rows = lambda d: [r for r in read_rows(os.path.join(d, 'stage2')) if r['split'] == 'train']
  np.testing.assert_allclose(
      [r['loss'] for r in rows(cached_dir)], [r['loss'] for r in rows(plain_dir)], rtol=1e-5
  )


def test_feature_cache_on_names_what_makes_it_inexact(tmp_path):
  config = tiny_config(num_train_steps=2)
  config.stage2.num_epochs, config.stage2.feature_cache = 1, 'on'  # bn 'update', crop_flip.
  with pytest.raises(ValueError, match="stage2.bn='frozen'.*stage2.augment='none'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_feature_cache_reasons_cover_every_inexact_setting():
  reasons = lambda **kw: train.feature_cache.unavailable_reasons(
      **{'head_only': True, 'train_bn': False, 'augment': 'none', 'mixup_alpha': 0.0, **kw}
  )
  assert reasons() == []
  assert reasons(eval_image_size=224) == [train.feature_cache.RESIZED_FOR_EVAL]
  assert len(reasons(head_only=False, train_bn=True, augment='flip', mixup_alpha=1.0)) == 4
