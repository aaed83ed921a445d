"""ltjax.train.preflight: a stage's training step traced with abstract values."""

import jax
import numpy as np
import pytest

from helpers import tiny_config
from helpers import tiny_two_stage_config
from ltjax.train import preflight
from ltjax.train import stages

COUNTS = np.array([40, 30, 20, 12, 8, 6, 5, 4, 3, 2])


def trace(config, stage_index=0, image_shape=(16, 16, 3)):
  stage = stages.plan_stages(config, '/nonexistent/never/written')[stage_index]
  return preflight.trace_train_step(
      stage, train_counts=COUNTS, image_shape=image_shape, steps_per_epoch=5
  )


def test_the_trace_has_the_metrics_of_a_real_step_without_running_one():
  config = tiny_config(**{'sam.rho': 0.05, 'data.mixup_alpha': 1.0})
  metrics = trace(config)
  for key in ('loss', 'train_accuracy', 'grad_norm', 'param_norm'):
    assert metrics[key].shape == (), key
    assert isinstance(metrics[key], jax.ShapeDtypeStruct)


def test_stage_two_traces_its_own_head_and_trainable_parameters():
  config = tiny_two_stage_config()
  config.stage2.head = 'lws'
  assert trace(config, stage_index=1)['loss'].shape == ()


def test_a_head_the_features_cannot_carry_fails_before_any_data_or_compile():
  config = tiny_config(**{'model.name': 'resnet32', 'model.width': 1, 'model.head': 'etf'})
  with pytest.raises(ValueError, match='simplex-ETF classifier needs feature dimension'):
    trace(config)  # 4-d features for 10 classes.


def test_a_trainable_regex_matching_no_parameter_names_the_model():
  config = tiny_config(**{'trainable': '^backbone/stage4_'})  # ResNet-50's name, not the CNN's.
  with pytest.raises(ValueError, match=r"matches no parameter of model.name='small_cnn'"):
    trace(config)
