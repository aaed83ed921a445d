"""Every paper recipe declares each number-changing setting with its source (configs/provenance.py)."""

import importlib
import itertools

import pytest

from ltjax import config_files
from ltjax.configs import __main__ as configs_main
from ltjax.configs import common
from ltjax.configs import provenance
from ltjax.train import config_check

# Recipes that reproduce no paper row: the offline default, its CE baseline and the smoke run.
NOT_PAPER_RECIPES = ('default', 'ce_default', 'smoke')
RECIPES = sorted(
    name[len('configs/') : -len('.py')]
    for name in config_files.recipe_names()
    if name.count('/') == 1
)
PAPER_RECIPES = [name for name in RECIPES if name not in NOT_PAPER_RECIPES]


def argument_strings(module):
  """Every combination of the recipe's documented argument values."""
  names = list(module.ARGUMENTS)
  for values in itertools.product(*(module.ARGUMENTS[n] for n in names)):
    yield ','.join(f'{n}={v}' for n, v in zip(names, values))


@pytest.mark.parametrize('name', PAPER_RECIPES)
def test_recipe_declares_every_setting_with_a_source(name):
  module = importlib.import_module(f'ltjax.configs.{name}')
  assert hasattr(module, 'settings') and hasattr(module, 'ARGUMENTS'), name
  built = 0
  for arg in argument_strings(module):
    config = module.get_config(arg)
    table = module.settings(common.parse_arg(arg, **module.ARGUMENTS))
    assert provenance.problems(table, config) == [], (name, arg)
    config_check.check_names(config)  # Every combination is a config that can run.
    config_check.check_values(config, device_count=1)
    built += 1
  assert built >= 1
  # The default arguments build the same config as the first combination's.
  assert (
      module.get_config().to_dict() == module.get_config(next(argument_strings(module))).to_dict()
  )


def test_an_undeclared_or_changed_value_is_found():
  module = importlib.import_module('ltjax.configs.ce_cifar_lt')
  table = module.settings(common.parse_arg(None, **module.ARGUMENTS))
  config = table.config()
  assert provenance.problems(table, config) == []
  config.optim.lr = 0.5  # Changed after the table was applied.
  config.loss.focal_gamma = 1.0  # Not declared at all.
  config.data.num_workers = 4  # Operational: never needs a source.
  found = provenance.problems(table, config)
  assert len(found) == 2, found
  assert found[0].startswith('optim.lr: declared 0.1, the config has 0.5')
  assert found[1].startswith('loss.focal_gamma: 1.0 differs from the base (2.0), undeclared')


def test_required_settings_and_source_kinds_are_checked():
  table = provenance.Settings().set('optim.lr', 0.1, provenance.paper('Sec. 4'))
  found = provenance.problems(table, table.config())
  assert 'model.name: required, undeclared' in found
  assert 'stage2.init_from: required, undeclared' not in found  # One stage: no stage-2 keys.
  table.set('optim.momentum', 0.9, provenance.run('no'))
  assert any('its source cannot be "run"' in f for f in provenance.problems(table, table.config()))
  with pytest.raises(ValueError, match='owner/name@commit path'):
    provenance.Source('code', 'train.py')
  with pytest.raises(ValueError, match='Unknown source kind'):
    provenance.Source('blog', 'somewhere')
  with pytest.raises(KeyError, match="'optim.lrr' is not a key"):
    provenance.Settings().set('optim.lrr', 0.1, provenance.assumed('typo')).config()


def test_the_command_line_prints_a_recipe_table(capsys):
  assert configs_main.main(['ltjax.configs', 'configs/ce_cifar_lt.py:dataset=cifar10']) == 0
  out = capsys.readouterr().out
  assert 'data.name' in out and "'cifar10'" in out
  assert 'code: kaidic/LDAM-DRW@2536330 cifar_train.py' in out
  assert configs_main.main(['ltjax.configs', 'configs/default.py']) == 2  # Not a paper recipe.
