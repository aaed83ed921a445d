"""Tests for ltjax.train.config_check: every table-selecting config value, checked up front."""

import importlib
import os
import re

import pytest

from configs import base
from helpers import REPO
from helpers import tiny_config
from ltjax import config_files
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
    'sam.batch_norm_statistics': ('clean_pass', 'both_passes'),
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


# One value out of range for every key of config_check.value_rules() that a run reads as a
# number; the training blocks' keys are tested for stage 1 and under stage2. too.
TRAINING_BAD = {
    'loss.label_smoothing': 1.0,
    'loss.focal_gamma': -1.0,
    'loss.cb_beta': 1.5,
    'loss.ldam_max_margin': -0.5,
    'loss.ldam_scale': 0.0,
    'loss.la_tau': -1.0,
    'loss.vs_gamma': -0.3,
    'loss.vs_tau': -1.0,
    'loss.lort_delta': 1.0,
    'loss.switch_epoch': -1,
    'loss.drw_beta': -0.1,
    'loss.adrw_nu': -0.25,
    'loss.feature_norm_weight': -0.1,
    'loss.lwr_weight': -1.0,
    'loss.lwr_theta': 1.5,
    'loss.lwr_tau': 0.0,
    'loss.adversarial_weight': -1.0,
    'loss.adversarial_cap': 1.5,
    'loss.adversarial_div': 0.0,
    'optim.lr': -0.1,
    'optim.momentum': 1.0,
    'optim.weight_decay': -5e-4,
    'schedule.epoch_offset': -1,
    'schedule.warmup_epochs': -1.0,
    'schedule.warmup_start_factor': 1.5,
    'schedule.milestones': (180, 160),
    'schedule.gamma': 0.0,
}
BAD = {
    'seed': -1,
    'batch_size': 0,
    'eval_batch_size': 0,
    'num_epochs': 0,
    'log_every_steps': 0,
    'eval_every_epochs': 0,
    'checkpoint_every_steps': -1,
    'keep_checkpoints': 0,
    'checkpoint_every_minutes': -1.0,
    'profile_steps': (5, 3),
    'data.imbalance_ratio': 0.5,
    'data.n_max': -5,
    'data.subsample_seed': -1,
    'data.val_per_class': -1,
    'data.open_classes': (-1,),
    'data.read_threads': -1,
    'data.num_workers': -1,
    'data.crop_padding': -1,
    'data.image_size': 0,
    'data.mixup_alpha': -0.2,
    'data.synthetic.num_classes': 1,
    'data.synthetic.per_class': 0,
    'data.synthetic.image_shape': (28, 28),
    'data.synthetic.seed': -1,
    'model.head_scale': 0.0,
    'model.head_tau': -1.0,
    'model.head_seed': -1,
    'model.lwr_projection_dim': -1,
    'model.bn_scale_init': 0.0,
    'model.width': -8,
    'sam.rho': -0.05,
    'sam.rho_boundaries': (60, 5),
    'sam.rho_values': (0.05, -0.1),
    'cc_sam.flat_ratio': 1.5,
    'cc_sam.noise_ratio': -1e-6,
    'cc_sam.rho': -0.1,
    'stage2.num_epochs': -1,
    'stage2.batch_size': -1,
    'stage2.mixup_alpha': -1.0,
    'stage2.eval_every_epochs': 0,
    'stage2.max_norm': -0.1,
    'eval.image_size': -1,
    'eval.many_threshold': -1,
    'eval.few_threshold': -1,
    'eval.group_sizes': (3, 4),  # Read only with eval.groups='rank'.
    'posthoc.grid': (float('nan'),),
    **TRAINING_BAD,
    **{f'stage2.{key}': value for key, value in TRAINING_BAD.items()},
}
# Keys whose every value of their type is valid (num_train_steps <= 0: num_epochs decides).
NO_BAD_VALUE = ('num_train_steps',)


def numeric_leaves(config):
  """Keys of every number and tuple (of numbers) in ``config``; bools are switches."""
  return {
      key
      for key, value in config_check.flatten(config).items()
      if isinstance(value, (int, float, tuple)) and not isinstance(value, bool)
  }


def test_every_numeric_key_of_the_base_config_has_a_range_rule():
  # A new numeric key in configs/base.py needs its rule in config_check.value_rules() (and
  # an out-of-range value in BAD above).
  rules = config_check.value_rules()
  assert numeric_leaves(base.get_config()) <= set(rules), sorted(
      numeric_leaves(base.get_config()) - set(rules)
  )
  assert set(rules) <= set(config_check.flatten(base.get_config()))  # No stale rule.
  assert set(rules) == set(BAD) | set(NO_BAD_VALUE), sorted(set(rules) ^ set(BAD))


@pytest.mark.parametrize('key', sorted(BAD))
def test_an_out_of_range_value_names_its_exact_key(key):
  config = two_stage_config(**{key: BAD[key], 'num_train_steps': -1})
  with pytest.raises(ValueError, match=f'config.{re.escape(key)}=') as error:
    config_check.check_values(config)
  other = [k for k in BAD if k != key and f'config.{k}=' in str(error.value)]
  assert not other, str(error.value)  # One bad value, one problem.


@pytest.mark.parametrize(
    'key',
    sorted(
        k
        for k, v in config_check.flatten(base.get_config()).items()
        if isinstance(v, float) and k in BAD
    ),
)
def test_a_non_finite_number_is_refused(key):
  for value in (float('nan'), float('inf')):
    with pytest.raises(ValueError, match=f'config.{re.escape(key)}={value!r}'):
      config_check.check_values(two_stage_config(**{key: value}))


def test_a_negative_learning_rate_fails_before_anything_runs(tmp_path):
  # It trained by gradient ascent to exit 0.
  config = tiny_config(**{'optim.lr': -0.05})
  with pytest.raises(ValueError, match=r'config.optim.lr=-0.05 must be >= 0'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize(
    'overrides,message',
    [
        ({'sam.rho_values': (0.1, 0.2)}, r'sam.rho_values=\(0.1, 0.2\) needs 1 value'),
        (
            {'sam.rho_boundaries': (5, 60), 'sam.rho_values': (0.1,)},
            r'sam.rho_values=\(0.1,\) needs 3 values',
        ),
        ({'eval.many_threshold': 20, 'eval.few_threshold': 100}, r'eval.few_threshold=100'),
        ({'optim.momentum': 0.0, 'optim.nesterov': True}, r'config.optim.nesterov=True'),
        (
            {'stage2.optim.momentum': 0.0, 'stage2.optim.nesterov': True},
            r'config.stage2.optim.nesterov=True',
        ),
        ({'data.imbalance_ratio': 1.0}, r'config.data.imbalance_ratio=1.0 must be 0 or > 1'),
        ({'data.imbalance_ratio': -10.0}, r'config.data.imbalance_ratio=-10.0 must be 0 or > 1'),
        ({'schedule.milestones': (160, 160)}, r'schedule.milestones=\(160, 160\)'),
        ({'sam.rho_boundaries': (5.5,), 'sam.rho_values': (0.1, 0.2)}, 'sam.rho_boundaries'),
        ({'data.open_classes': (1, 1)}, r'data.open_classes=\(1, 1\)'),
    ],
)
def test_values_that_contradict_another_key_are_refused(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_check.check_values(two_stage_config(**overrides))


def test_edge_values_that_mean_something_pass():
  edges = {
      'optim.lr': 0.0,  # A frozen check.
      'optim.momentum': 0.0,
      'optim.weight_decay': 0.0,
      'loss.label_smoothing': 0.0,
      'loss.cb_beta': 1.0,  # The 1 / n_c limit.
      'loss.drw_beta': 1.0,
      'loss.lwr_theta': -1.0,  # Repels every pair (LWR Table 5).
      'loss.lort_delta': 0.0,
      'loss.vs_gamma': 0.0,
      'loss.vs_tau': 0.0,
      'loss.adversarial_cap': 0.0,
      'schedule.warmup_start_factor': 1.0,
      'schedule.milestones': (0, 1.5, 160),
      'sam.rho_boundaries': (5, 60, 75),
      'sam.rho_values': (0.05, 0.1, 0.5, 0.5),
      'cc_sam.flat_ratio': 1.0,
      'data.imbalance_ratio': 0.0,
      'eval.many_threshold': 99,
      'eval.few_threshold': 100,  # Medium empty, nothing both many and few.
      'posthoc.grid': (0.0, 0.5, 2.0),
      'stage2.optim.lr': 0.0,
  }
  config_check.check_values(two_stage_config(**edges))


RECIPES = [
    name[len('configs/') : -len('.py')]
    for name in config_files.recipe_names()
    if name.count('/') == 1
]


def readme_recipe_commands():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  table = readme[readme.index('## Reproducing the papers') : readme.index('## What a run writes')]
  return sorted(set(re.findall(r'`configs/([a-z0-9_]+)\.py(?::([^`]*))?`', table)))


@pytest.mark.parametrize(
    'name,arg',
    sorted({(n, '') for n in RECIPES} | set(readme_recipe_commands())),
    ids=lambda v: v or 'default',
)
def test_every_recipe_passes_the_value_checks(name, arg):
  config = importlib.import_module(f'ltjax.configs.{name}').get_config(*([arg] if arg else []))
  config_check.check_values(config, device_count=1)


def feature_cache_config(**overrides):
  """Two stages whose stage 2 can train on cached features."""
  return two_stage_config(
      **{
          'stage2.feature_cache': 'on',
          'stage2.bn': 'frozen',
          'stage2.augment': 'none',
          **overrides,
      }
  )


def test_feature_cache_on_is_checked_before_stage1_trains(tmp_path):
  # stage2.bn='update' (and stage 1's crop_flip): it failed only after stage 1 had trained.
  config = two_stage_config(**{'stage2.feature_cache': 'on'})
  workdir = str(tmp_path / 'run')
  with pytest.raises(
      ValueError,
      match=r"config.stage2.feature_cache='on'.*stage2.bn='frozen'.*stage2.augment='none'",
  ):
    train.train_and_evaluate(config, workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize(
    'overrides,reason',
    [
        ({'stage2.bn': 'update'}, r"stage2.bn='update'"),
        ({'stage2.augment': 'flip'}, r"images are augmented \('flip'"),
        ({'stage2.augment': '', 'data.augment': 'crop_flip'}, r"augmented \('crop_flip'"),
        ({'stage2.mixup_alpha': 0.2}, r'stage2.mixup_alpha > 0'),
        ({'stage2.trainable': '.*'}, r'stage2.trainable trains parameters outside head/'),
    ],
)
def test_feature_cache_on_names_each_condition_it_needs(overrides, reason):
  config_check.check_values(feature_cache_config())
  config_check.check_values(feature_cache_config(**{'eval.image_size': 24}))  # A warning only.
  config_check.check_values(feature_cache_config(**{'stage2.trainable': 'head/kernel'}))
  with pytest.raises(ValueError, match=reason):
    config_check.check_values(feature_cache_config(**overrides))
  config_check.check_values(feature_cache_config(**{**overrides, 'stage2.feature_cache': 'auto'}))


@pytest.mark.parametrize(
    'key',
    ['trainable', 'optim.weight_decay_mask', 'sam.perturb', 'stage2.trainable'],
)
def test_a_parameter_regex_that_does_not_compile_is_refused(key):
  # re.error is no ValueError: it ended the run as a bug (exit 1) when the optimiser was built.
  with pytest.raises(ValueError, match=rf"config.{re.escape(key)}='head/\(' is not a regular"):
    config_check.check_values(two_stage_config(**{key: 'head/('}))


@pytest.mark.parametrize('key', sorted(set(BAD) | set(NO_BAD_VALUE)))  # All of value_rules().
def test_none_where_a_number_belongs_is_refused_naming_the_key(key):
  # ml_collections accepts None for any field; comparing it raised a TypeError (exit 1).
  read = {'num_train_steps': -1, 'eval.groups': 'rank', 'eval.group_sizes': (3, 4)}  # All read.
  config = feature_cache_config(**{**read, key: None})
  config_check.check_names(config)  # Runs first (plan_stages): no TypeError there either.
  with pytest.raises(ValueError, match=f'config.{re.escape(key)}=None must be'):
    config_check.check_values(config)
