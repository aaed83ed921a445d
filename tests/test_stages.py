"""Tests for ltjax.train.stages: stage planning, the stage-2 config and merging parameters."""

import os

import chex
import jax
import numpy as np
import pytest

from helpers import read_rows
from helpers import tiny_config
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding
from ltjax.train import stages


def stage2_settings(config):
  """Non-default re-training settings in config.stage2 (stage 2 runs one epoch)."""
  s2 = config.stage2
  s2.num_epochs, s2.trainable, s2.bn, s2.head = 1, 'head/kernel', 'frozen', 'reinit'
  s2.max_norm, s2.max_norm_per_epoch, s2.feature_cache = 0.2, True, 'on'
  s2.init_from, s2.augment = 'latest', 'none'  # 'on' needs unaugmented images.
  return config


def test_plan_stages_and_stage_properties(tmp_path):
  config = stage2_settings(tiny_config())
  stage1, stage2 = stages.plan_stages(config, str(tmp_path))
  assert (stage1.name, stage1.workdir, stage1.source) == ('stage1', str(tmp_path), None)
  assert stage1.config is config
  assert (stage2.name, stage2.workdir) == ('stage2', os.path.join(str(tmp_path), 'stage2'))
  assert stage2.source == stages.Source(str(tmp_path), 'latest', config)
  # A fresh stage trains everything the ordinary way, whatever config.stage2 says ...
  assert (
      stage1.trainable,
      stage1.train_bn,
      stage1.reinit_head,
      stage1.max_norm,
      stage1.max_norm_per_epoch,
      stage1.feature_cache,
  ) == (None, True, False, 0.0, False, 'off')
  # ... a stage with a source reads config.stage2.
  assert (
      stage2.trainable,
      stage2.train_bn,
      stage2.reinit_head,
      stage2.max_norm,
      stage2.max_norm_per_epoch,
      stage2.feature_cache,
  ) == ('head/kernel', False, True, 0.2, True, 'on')
  # The other values of each setting.
  config.stage2.max_norm_per_epoch, config.stage2.feature_cache = False, 'auto'
  config.stage2.trainable, config.stage2.bn, config.stage2.head = '', 'update', 'lws'
  stage2 = stages.plan_stages(config, str(tmp_path))[1]
  assert (
      stage2.trainable,
      stage2.train_bn,
      stage2.reinit_head,
      stage2.max_norm_per_epoch,
      stage2.feature_cache,
  ) == (None, True, False, False, 'auto')
  config.stage2.num_epochs = 0
  assert [s.name for s in stages.plan_stages(config, str(tmp_path))] == ['stage1']


def test_trains_head_only_reads_the_trainable_regex(tmp_path):
  config = stage2_settings(tiny_config())
  params = {
      'backbone': {'conv': {'kernel': np.ones(2)}},
      'head': {'kernel': np.ones(2), 'bias': np.ones(2)},
  }
  stage1, stage2 = stages.plan_stages(config, str(tmp_path))
  assert stages.trains_head_only(stage2, params)  # 'head/kernel'.
  assert not stages.trains_head_only(stage1, params)  # Everything trains.
  config.stage2.trainable = 'head/.*|backbone/conv/.*'
  assert not stages.trains_head_only(stages.plan_stages(config, str(tmp_path))[1], params)


def test_stage2_config_puts_the_stage2_settings_in_place():
  config = tiny_config(
      **{
          'sam.rho': 0.05,
          'sam.rho_values': (0.05, 0.1),
          'sam.rho_boundaries': (1,),
          'cc_sam.flat_ratio': 0.3,
      }
  )
  s2 = config.stage2
  s2.num_epochs, s2.eval_every_epochs, s2.sampler, s2.mixup_alpha = 3, 2, 'class_aware', 0.2
  s2.loss.name, s2.loss.adversarial_weight = 'balanced_softmax', 1.0
  s2.optim.lr, s2.optim.weight_decay = 0.02, 0.1
  s2.schedule.name = 'constant'
  before = config.to_dict()
  c = stages.stage2_config(config)
  assert config.to_dict() == before  # A new config; stage 1's is untouched.
  assert c.loss.to_dict() == s2.loss.to_dict() and c.loss is not s2.loss
  assert c.optim.to_dict() == s2.optim.to_dict() and c.optim is not s2.optim
  assert c.schedule.to_dict() == s2.schedule.to_dict()
  assert (c.num_epochs, c.num_train_steps, c.eval_every_epochs) == (3, -1, 2)
  assert (c.data.sampler, c.data.mixup_alpha) == ('class_aware', 0.2)
  # Empty or zero stage-2 values keep stage 1's.
  assert (c.batch_size, c.data.augment, c.model.head) == (16, 'crop_flip', 'linear')
  # Stage 2 plans no stage of its own, and runs without SAM or CC-SAM's flat loss.
  assert c.stage2.num_epochs == 0
  assert (c.sam.rho, tuple(c.sam.rho_values), c.cc_sam.flat_ratio) == (0.0, (), 0.0)
  # Everything else is stage 1's.
  for key in ('seed', 'dtype', 'eval_batch_size', 'model', 'eval'):
    assert c[key] == config[key], key
  assert c.data.name == config.data.name and c.data.imbalance_ratio == config.data.imbalance_ratio
  c.loss.name = 'focal'
  assert s2.loss.name == 'balanced_softmax'
  # Explicit stage-2 values: batch size, augmentation and a head of another kind.
  s2.batch_size, s2.augment = 32, 'flip'
  for head, expected in (('keep', 'linear'), ('reinit', 'linear'), ('lws', 'lws')):
    s2.head = head
    c = stages.stage2_config(config)
    assert (c.batch_size, c.data.augment, c.model.head) == (32, 'flip', expected)


def test_merge_params_keeps_matching_source_leaves():
  fresh = {
      'backbone': {'conv': {'kernel': np.zeros((3, 3)), 'bias': np.zeros(3)}},
      'head': {'kernel': np.zeros((4, 5)), 'bias': np.zeros(5), 'scale': np.ones(5)},
  }
  source = {
      'backbone': {
          'conv': {'kernel': np.full((3, 3), 7.0), 'bias': np.full(4, 7.0)},
          'extra': np.full(2, 7.0),
      },
      'head': {'kernel': np.full((4, 5), 8.0), 'bias': np.full(5, 8.0)},
  }
  merged = stages.merge_params(fresh, source)
  expected = {
      'backbone': {
          'conv': {
              'kernel': source['backbone']['conv']['kernel'],  # Path and shape.
              'bias': fresh['backbone']['conv']['bias'],
          }
      },  # Another shape.
      'head': {
          'kernel': source['head']['kernel'],
          'bias': source['head']['bias'],
          'scale': fresh['head']['scale'],
      },
  }  # Not in the source (LWS after linear).
  chex.assert_trees_all_equal(merged, expected)  # The structure is fresh's: no 'extra'.
  # cRT: the fresh head, the source's backbone.
  crt = stages.merge_params(fresh, source, skip_prefix='head/')
  chex.assert_trees_all_equal(crt, {'backbone': expected['backbone'], 'head': fresh['head']})


def restore_params(workdir, config, which='best'):
  model = models.build_model(config.model, 10)
  tx = optim.base_optimizer(config.optim, lambda count: 0.0)
  abstract = train.create_train_state(
      model, tx, input_shape=(28, 28, 1), seed=config.seed, mesh=sharding.make_mesh()
  )
  checkpoints = train.Checkpoints(workdir)
  try:
    return jax.device_get(checkpoints.restore(abstract, which=which))
  finally:
    checkpoints.close()


@pytest.mark.parametrize('bn', ['frozen', 'update'])
def test_two_stage_run_freezes_the_backbone_and_retrains_the_head(tmp_path, bn):
  config = tiny_config(num_train_steps=6, eval_every_epochs=1)
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.sampler, s2.bn, s2.max_norm = 1, 'reinit', 'class_aware', bn, 0.1
  s2.optim.lr, s2.optim.weight_decay = 0.05, 0.1
  workdir = str(tmp_path)
  state, results = train.train_and_evaluate(config, workdir)
  stage1 = restore_params(workdir, config)
  final = jax.device_get(state)
  for a, b in zip(
      jax.tree.leaves(stage1.params['backbone']), jax.tree.leaves(final.params['backbone'])
  ):
    np.testing.assert_array_equal(a, b)  # Frozen: not even weight decay moves it.
  assert not np.allclose(stage1.params['head']['kernel'], final.params['head']['kernel'])
  stats_equal = all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(stage1.batch_stats), jax.tree.leaves(final.batch_stats))
  )
  assert stats_equal == (bn == 'frozen')
  # MaxNorm: thresholds from the stage-1 classifier bound every class vector.
  bound = optim.max_norm_thresholds(stage1.params['head']['kernel'], 0.1)
  assert np.all(np.linalg.norm(final.params['head']['kernel'], axis=0) <= bound * (1 + 1e-5))
  splits = {row['split'] for row in read_rows(os.path.join(workdir, 'stage2'))}
  assert splits == {'train', 'test'}
  assert os.path.exists(os.path.join(workdir, 'stage2', 'per_class_accuracy.png'))
  # Running again resumes both stages from their checkpoints and trains nothing.
  again, again_results = train.train_and_evaluate(config, workdir)
  np.testing.assert_equal(again_results, results)


def test_stage2_without_stage1_checkpoint_fails_clearly(tmp_path):
  config = tiny_config()
  config.stage2.num_epochs = 1
  stage = train.plan_stages(config, str(tmp_path))[1]
  with pytest.raises(FileNotFoundError, match='train stage 1 first'):
    train.run_stage(stage)


def test_stage2_starts_from_a_sam_stage1(tmp_path):
  # Stage 2 restores only the source's parameters and BatchNorm statistics, so a stage 1
  # trained with SAM (whose optimiser state is a SAMState) initialises it. Before ltjax
  # restored only those, the source's optimiser state was rebuilt without SAM and the restore
  # failed on the structure mismatch.
  config = tiny_config(num_train_steps=4, eval_every_epochs=1, **{'sam.rho': 0.05})
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.bn, s2.init_from = 1, 'keep', 'frozen', 'latest'
  workdir = str(tmp_path)
  state, results = train.train_and_evaluate(config, workdir)
  stage1 = jax.device_get(
      stages.restore_variables(
          workdir,
          models.build_model(config.model, 10),
          input_shape=(28, 28, 1),
          which='latest',
      )
  )
  final = jax.device_get(state)
  assert int(stage1['step']) == 4 and int(final.step) > 0 and np.isfinite(results['accuracy'])
  chex.assert_trees_all_equal(stage1['params']['backbone'], final.params['backbone'])
  chex.assert_trees_all_equal(stage1['batch_stats'], final.batch_stats)
  assert not np.array_equal(stage1['params']['head']['kernel'], final.params['head']['kernel'])
