"""Tests for ltjax.train.config_check: every table-selecting config value, checked up front."""

import os

import pytest

from helpers import tiny_config
from ltjax import data
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.data import datasets
from ltjax.data import longtail
from ltjax.data import samplers
from ltjax.losses import cc_sam
from ltjax.losses import class_balanced
from ltjax.losses import objective
from ltjax.optim import schedules
from ltjax.train import config_check
from ltjax.train import final_adjustment

# Every key whose value names an entry of a table -> the table's valid names.
TRAINING = {
    'loss.name': tuple(losses.LOSSES),
    'loss.schedule': tuple(losses.SCHEDULES),
    'loss.cb_variant': tuple(class_balanced.VARIANTS),
    'loss.weighted_reduction': tuple(losses.WEIGHTED_REDUCTIONS),
    'loss.lwr_schedule': tuple(objective.LWR_SCHEDULES),
    'optim.name': tuple(optim.OPTIMIZERS),
    'schedule.name': tuple(schedules.SCHEDULES),
    'schedule.granularity': tuple(schedules.GRANULARITIES),
}
STAGE1 = {
    'dtype': tuple(models.DTYPES),
    'data.name': tuple(datasets.SOURCES),
    'data.profile': tuple(longtail.PROFILES),
    'data.selection': tuple(longtail.SELECTIONS),
    'data.sampler': tuple(samplers.SAMPLERS),
    'data.augment': tuple(data.AUGMENTATIONS),
    'data.decoder': ('pillow', 'dali'),
    'model.name': tuple(models.BACKBONES),
    'model.head': tuple(models.HEADS),
    'model.head_init': ('torch', 'kaiming_normal'),
    'model.pretrained_head': ('auto', 'skip'),
    'cc_sam.radius': tuple(cc_sam.RADII),
    'cc_sam.implementation': tuple(losses.CC_SAM_IMPLEMENTATIONS),
    'cc_sam.direction': tuple(cc_sam.DIRECTIONS),
    'posthoc.method': tuple(final_adjustment.METHODS),
    'eval.groups': ('threshold', 'rank'),
    **TRAINING,
}
STAGE2 = {
    'stage2.init_from': ('best', 'latest'),
    'stage2.head': ('keep', 'reinit') + tuple(models.HEADS),
    'stage2.bn': ('update', 'frozen'),
    'stage2.sampler': tuple(samplers.SAMPLERS),
    'stage2.augment': ('',) + tuple(data.AUGMENTATIONS),
    'stage2.feature_cache': ('auto', 'on', 'off'),
    **{f'stage2.{key}': valid for key, valid in TRAINING.items()},
}


def two_stage_config(**overrides):
  return tiny_config(**{'stage2.num_epochs': 1, **overrides})


def check_message(message, key, value, valid):
  assert f'Unknown {key} {value!r}' in message, message
  assert str(sorted(valid)) in message, message


def test_valid_configs_pass():
  config_check.check_names(tiny_config())
  config_check.check_names(two_stage_config(**{'stage2.head': 'lws', 'stage2.augment': 'flip'}))
  # Every checked key is tested below: a key new in name_tables() needs its entry above.
  assert set(config_check.name_tables()) == set(STAGE1) | set(STAGE2)


@pytest.mark.parametrize('key', sorted(STAGE1) + sorted(STAGE2))
def test_a_misspelt_value_names_the_key_the_value_and_the_valid_names(key):
  valid = {**STAGE1, **STAGE2}[key]
  bad = f'{valid[-1]}x'  # One letter off a valid name.
  with pytest.raises(ValueError) as error:
    config_check.check_names(two_stage_config(**{key: bad}))
  check_message(str(error.value), key, bad, valid)


def test_several_bad_values_are_reported_in_one_error():
  bad = {
      'loss.name': 'balanced_sofmax',
      'model.head': 'cosin',
      'data.augment': 'crop',
      'dtype': 'float16',
      'schedule.name': 'cosin',
      'stage2.head': 'lwss',
      'stage2.loss.name': 'ce',
  }
  with pytest.raises(ValueError, match='7 config values name nothing') as error:
    config_check.check_names(two_stage_config(**bad))
  for key, value in bad.items():
    check_message(str(error.value), key, value, {**STAGE1, **STAGE2}[key])


def test_stage2_values_are_checked_only_when_stage2_runs():
  bad = {f'stage2.{key}': 'nothing' for key in ('head', 'bn', 'loss.name', 'optim.name')}
  config_check.check_names(tiny_config(**bad))  # stage2.num_epochs = 0: never read.
  with pytest.raises(ValueError, match='4 config values name nothing'):
    config_check.check_names(two_stage_config(**bad))


@pytest.mark.parametrize(
    'key,value', [('loss.name', 'balanced_sofmax'), ('stage2.loss.name', 'balanced_sofmax')]
)
def test_a_bad_value_fails_before_any_data_is_loaded(key, value, tmp_path, monkeypatch):
  def load_datasets(*args, **kwargs):
    del args, kwargs
    pytest.fail('the data was loaded before the config was checked')

  monkeypatch.setattr(data, 'load_datasets', load_datasets)
  monkeypatch.setattr(datasets, 'load_datasets', load_datasets)
  config = two_stage_config(**{key: value, 'data.data_dir': str(tmp_path / 'nowhere')})
  workdir = str(tmp_path / 'run')
  with pytest.raises(ValueError, match=f"Unknown {key} 'balanced_sofmax'"):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)  # Nothing was written either.
  with pytest.raises(ValueError, match=f"Unknown {key} 'balanced_sofmax'"):
    train.plan_stages(config, workdir)


@pytest.mark.parametrize(
    'key,value,message',
    [
        ('batch_size', 0, r'config.batch_size=0 must be > 0'),
        ('batch_size', 12, r'config.batch_size=12 is not divisible by the 8 devices'),
        ('eval_batch_size', 0, r'config.eval_batch_size=0 must be > 0'),
        ('num_epochs', 0, r'config.num_epochs=0 must be > 0 \(or set config.num_train_steps'),
        ('log_every_steps', 0, r'config.log_every_steps=0 must be > 0'),
        ('eval_every_epochs', 0, r'config.eval_every_epochs=0 must be > 0'),
        ('keep_checkpoints', 0, r'config.keep_checkpoints=0 must be > 0: resuming needs'),
        ('checkpoint_every_steps', -1, r'config.checkpoint_every_steps=-1 must be >= 0'),
        ('data.n_max', -5, r'config.data.n_max=-5 must be >= 0'),
        ('stage2.batch_size', 30, r'config.stage2.batch_size=30 is not divisible by the 8'),
        ('stage2.eval_every_epochs', 0, r'config.stage2.eval_every_epochs=0 must be > 0'),
        ('stage2.num_epochs', -1, r'config.stage2.num_epochs=-1 must be >= 0'),
    ],
)
def test_sizes_and_intervals_name_their_exact_key_before_anything_runs(
    key, value, message, tmp_path
):
  config = two_stage_config(**{key: value, 'num_train_steps': -1})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_all_out_of_range_values_are_reported_at_once():
  config = two_stage_config(**{'batch_size': 0, 'log_every_steps': 0, 'stage2.batch_size': 30})
  with pytest.raises(ValueError, match='3 config values are out of range'):
    config_check.check_values(config)
  config_check.check_values(two_stage_config())
  config_check.check_values(tiny_config(**{'num_epochs': 0, 'num_train_steps': 5}))


@pytest.mark.parametrize(
    'groups,sizes,message',
    [
        ('rank', (), r"group_sizes=\(\) must be \(many, medium\) for eval.groups='rank'"),
        ('rank', (3, 4, 5), r'group_sizes=\(3, 4, 5\) must be \(many, medium\)'),
        ('rank', (-1, 4), r'group_sizes=\(-1, 4\) must be \(many, medium\)'),
        ('threshold', (3, 4), r"group_sizes=\(3, 4\) is read only with eval.groups='rank'"),
    ],
)
def test_group_sizes_are_checked_before_anything_runs(groups, sizes, message, tmp_path):
  config = tiny_config(**{'eval.groups': groups, 'eval.group_sizes': sizes})
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
  config_check.check_values(tiny_config(**{'eval.groups': 'rank', 'eval.group_sizes': (3, 4)}))


def test_head_init_is_checked_against_both_stages_heads():
  config_check.check_names(tiny_config(**{'model.head_init': 'kaiming_normal'}))
  with pytest.raises(ValueError, match=r"model.head='cosine'.*leave model.head_init='torch'"):
    config_check.check_names(
        tiny_config(**{'model.head': 'cosine', 'model.head_init': 'kaiming_normal'})
    )
  stage2 = two_stage_config(**{'model.head_init': 'kaiming_normal', 'stage2.head': 'etf'})
  with pytest.raises(ValueError, match=r"stage2.head='etf'.*has its own init"):
    config_check.check_names(stage2)
