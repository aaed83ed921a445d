"""The installable package: config paths resolved against the installed recipes, and the wheel.

``ltjax.config_files`` lets ``--config=configs/smoke.py`` name an installed
recipe from any directory. The wheel test builds ltjax offline from a copy of
the checkout, installs it into a fresh folder, and runs the smoke recipe with
``python -m ltjax.train`` from a directory that holds no ``configs/``: what a
user of the wheel does, with jax and the other dependencies from this
environment.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO
from helpers import requires_fashion_mnist
import ltjax
from ltjax import config_files
from ltjax.study import cells
from ltjax.train import results as run_results


def test_a_file_wins_then_the_installed_recipes(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  installed = os.path.join(config_files.RECIPES, 'smoke.py')
  assert os.path.isfile(installed)
  assert config_files.resolve('configs/smoke.py') == installed
  assert config_files.resolve('smoke.py') == installed
  assert config_files.resolve('./configs/ce_cifar_lt.py:dataset=cifar10,ir=50') == (
      os.path.join(config_files.RECIPES, 'ce_cifar_lt.py') + ':dataset=cifar10,ir=50'
  )
  assert config_files.resolve('configs/studies/fashion_mnist_lt.py') == os.path.join(
      config_files.RECIPES, 'studies', 'fashion_mnist_lt.py'
  )
  (tmp_path / 'configs').mkdir()
  (tmp_path / 'configs' / 'smoke.py').write_text('def get_config():\n  return None\n')
  assert config_files.resolve('configs/smoke.py:x') == 'configs/smoke.py:x'  # The user's own.
  assert config_files.resolve(installed) == installed
  assert 'configs/smoke.py' in config_files.recipe_names()
  assert 'configs/studies/fashion_mnist_lt.py' in config_files.recipe_names()


def test_a_missing_config_names_where_it_looked_and_the_nearest_recipe(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    config_files.resolve('configs/ce_defualt.py:x')
  message = str(error.value)
  assert str(tmp_path / 'configs' / 'ce_defualt.py') in message
  assert os.path.join(config_files.RECIPES, 'ce_defualt.py') in message
  assert 'Did you mean configs/ce_default.py' in message
  with pytest.raises(FileNotFoundError, match='not from a URL'):
    config_files.resolve('gs://bucket/smoke.py')
  with pytest.raises(FileNotFoundError, match='looked for /nowhere/x.py[.] Pass'):
    config_files.resolve('/nowhere/x.py')


def test_resolve_flag_rewrites_the_flag_only(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  smoke = os.path.join(config_files.RECIPES, 'smoke.py')
  argv = ['prog', '--config=configs/smoke.py:a', '--config.optim.lr=0.1', '--workdir=w']
  assert config_files.resolve_flag(argv, 'config') == [
      'prog',
      f'--config={smoke}:a',
      '--config.optim.lr=0.1',
      '--workdir=w',
  ]
  assert config_files.resolve_flag(['prog', '-config', 'smoke.py'], 'config') == [
      'prog',
      '-config',
      smoke,
  ]
  untouched = ['prog', '--study=configs/smoke.py', '--', '--config=nothing.py']
  assert config_files.resolve_flag(untouched, 'config') == untouched
  with pytest.raises(FileNotFoundError, match='nothing.py'):
    config_files.resolve_flag(['prog', '--config=nothing.py'], 'config')


def test_study_recipes_resolve_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = cells.load_config_file('configs/ce_cifar_lt.py:dataset=cifar10,ir=50')
  assert (config.data.tfds_name, config.data.imbalance_ratio) == ('cifar10', 50.0)
  with pytest.raises(FileNotFoundError, match='Did you mean configs/ce_default.py'):
    cells.load_config_file('configs/ce_defaul.py')


def _subprocess_env(site):
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env.update(PYTHONPATH=site, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  return env


@pytest.fixture(scope='module')
def installed_wheel(tmp_path_factory):
  """(the wheel, the folder it is installed in), built offline from a copy of the checkout."""
  tmp_path = tmp_path_factory.mktemp('package')
  src, dist, site = tmp_path / 'src', tmp_path / 'dist', tmp_path / 'site'
  src.mkdir()
  # A copy, so the build's build/ and egg-info never touch the checkout. symlinks=True keeps the
  # link ltjax/configs -> ../configs, which the build itself must follow.
  for name in os.listdir(REPO):
    if os.path.isfile(os.path.join(REPO, name)):
      shutil.copy(os.path.join(REPO, name), src / name)
  for name in ('ltjax', 'configs'):
    shutil.copytree(
        os.path.join(REPO, name),
        src / name,
        symlinks=True,
        ignore=shutil.ignore_patterns('__pycache__'),
    )
  assert os.path.islink(src / 'ltjax' / 'configs')
  pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '--no-input']
  offline = ['--no-deps', '--no-index', '-q']
  subprocess.run(
      pip + ['wheel', *offline, '--no-build-isolation', '-w', str(dist), str(src)],
      check=True,
      capture_output=True,
      timeout=300,
  )
  (wheel,) = dist.glob('ltjax-*.whl')
  subprocess.run(
      pip + ['install', *offline, '--target', str(site), str(wheel)],
      check=True,
      capture_output=True,
      timeout=300,
  )
  return wheel, site


def test_the_wheel_holds_the_recipes_as_ltjax_configs(installed_wheel):
  wheel, site = installed_wheel
  dist_info = f'ltjax-{ltjax.__version__}.dist-info'
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    top_level = archive.read(f'{dist_info}/top_level.txt').decode().split()
    metadata = archive.read(f'{dist_info}/METADATA').decode()
  recipes = {
      f'ltjax/{os.path.relpath(os.path.join(d, f), REPO)}'.replace(os.sep, '/')
      for d, _, files in os.walk(os.path.join(REPO, 'configs'))
      for f in files
      if f.endswith('.py')
  }
  assert 'ltjax/configs/smoke.py' in recipes and 'ltjax/configs/studies/__init__.py' in recipes
  assert recipes <= names, sorted(recipes - names)
  assert {'ltjax/config_files.py', 'ltjax/train/__main__.py', 'ltjax/eval/__main__.py'} <= names
  assert 'ltjax/study/__main__.py' in names
  assert not [n for n in names if n.startswith(('configs/', 'launch/', 'tests/'))]
  assert top_level == ['ltjax']  # No top-level `configs` package to clash with others.
  assert 'Requires-Dist: etils[epath]' in metadata
  assert 'Requires-Dist: gcsfs; extra == "gcs"' in metadata
  assert os.path.isdir(site / 'ltjax' / 'configs') and not os.path.islink(
      site / 'ltjax' / 'configs'
  )


@requires_fashion_mnist
def test_the_wheel_runs_the_smoke_recipe_from_any_directory(installed_wheel, tmp_path):
  _, site = installed_wheel
  cwd = tmp_path / 'elsewhere'  # No configs/ here: --config=configs/... is the installed recipe.
  cwd.mkdir()
  env = _subprocess_env(str(site))

  def python(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )

  where = python('-c', 'import ltjax, ltjax.config_files as c; print(ltjax.__file__, c.RECIPES)')
  assert where.returncode == 0, where.stderr
  package, recipes_dir = where.stdout.split()
  assert package == str(site / 'ltjax' / '__init__.py'), where.stdout  # Not the checkout's.
  assert recipes_dir == str(site / 'ltjax' / 'configs')

  cache = os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache'))
  run = python(
      '-m',
      'ltjax.train',
      '--config=configs/smoke.py',
      '--workdir=run',
      f'--compilation_cache={cache}',
      timeout=300,
  )
  assert run.returncode == 0, run.stderr[-3000:]
  results = json.loads((cwd / 'run' / run_results.FILENAME).read_text())
  assert results['final'] == 'stage2', results.keys()
  assert (cwd / 'run' / 'stage2' / 'metrics.jsonl').is_file()
  recorded = json.loads((cwd / 'run' / 'config.json').read_text())
  assert recorded['num_train_steps'] == 8  # configs/smoke.py's, not the default's.

  help_text = python('-m', 'ltjax.eval', '--help').stdout  # absl's --help exits with 1.
  assert help_text.startswith('Evaluates trained workdirs') and '--workdir' in help_text
  study = ['-m', 'ltjax.study', '--study=configs/studies/fashion_mnist_lt.py', '--workdir=study']
  dry = python(*study, '--dry_run', '--study.seeds=(0,)')
  assert dry.returncode == 0, dry.stderr[-3000:]
  lines = dry.stdout.splitlines()
  assert lines[0].startswith('pending ') and lines[-1].startswith('0 done, 0 partial, ')
  commands = python(*study, '--print_commands', '--study.seeds=(0,)').stdout.splitlines()
  assert commands[0].startswith('python -m ltjax.train --config=configs/ce_default.py ')
  missing = python('-m', 'ltjax.train', '--config=configs/smok.py', '--workdir=w')
  assert missing.returncode == 2 and 'Did you mean configs/smoke.py?' in missing.stderr
  assert not (cwd / 'w').exists()
