"""Imports of ltjax/: no import cycle, no lazy ltjax import, every imported package declared."""

import ast
import configparser
import importlib.metadata
import os
import re
import shutil
import sys

from helpers import REPO

PACKAGE = 'ltjax'
# The code a wheel installs (configs/ is ltjax.configs there) and the checkout's launchers.
INSTALLED_CODE = ('ltjax', 'configs', 'launch')
# Third-party imports that need an extra, and only there: {import name: extra}. Each is imported
# inside a function, with a message naming the extra when it is missing.
OPTIONAL_IMPORTS = {'tensorflow_datasets': 'tfds', 'nvidia': 'dali'}


def module_files(root):
  """{module name: path} of every .py file of the package under ``root``."""
  modules = {}
  # followlinks: ltjax/configs links to the checkout's configs/, ltjax.configs in a wheel.
  for directory, _, files in os.walk(os.path.join(root, PACKAGE), followlinks=True):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, root)[:-3].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        modules['.'.join(parts)] = path
  return modules


def imported_modules(node, module, is_package, modules):
  """The ltjax modules an Import / ImportFrom node names explicitly.

  ``import ltjax.x.y`` and ``from ltjax.x.y import name`` import ltjax.x.y;
  ``from ltjax.x import y`` imports the module ltjax.x.y if there is such a
  file, else (a name defined in the package) the package ltjax.x. The parent
  packages that Python imports on the way are not counted.
  """
  if isinstance(node, ast.Import):
    return [alias.name for alias in node.names if alias.name.split('.')[0] == PACKAGE]
  if node.level:  # Relative: from the module's package, one level up per extra dot.
    parts = module.split('.') if is_package else module.split('.')[:-1]
    parts = parts[: len(parts) - node.level + 1]
    base = '.'.join(parts + ([node.module] if node.module else []))
  else:
    base = node.module or ''
  if base.split('.')[0] != PACKAGE:
    return []
  targets = []
  for alias in node.names:
    submodule = f'{base}.{alias.name}'
    targets.append(submodule if submodule in modules else base)
  return targets


def import_graph(root):
  """{module: {modules it imports explicitly}} of the package under ``root``."""
  modules = module_files(root)
  graph = {}
  for module, path in modules.items():
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith('__init__.py')
    graph[module] = {
        target
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for target in imported_modules(node, module, is_package, modules)
        if target != module
    }
    unknown = graph[module] - set(modules)
    assert not unknown, f'{module} imports {sorted(unknown)}, which do not exist.'
  return graph


def find_cycle(graph):
  """One import cycle as [a, b, ..., a], or None."""
  state, stack = {}, []

  def visit(module):
    state[module] = 'open'
    stack.append(module)
    for target in sorted(graph[module]):
      if state.get(target) == 'open':
        return stack[stack.index(target) :] + [target]
      if target not in state:
        cycle = visit(target)
        if cycle:
          return cycle
    stack.pop()
    state[module] = 'done'
    return None

  for module in sorted(graph):
    if module not in state:
      cycle = visit(module)
      if cycle:
        return cycle
  return None


def lazy_imports(root):
  """['path:line: import'] of every ltjax import inside a function body."""
  found, modules = [], module_files(root)
  for module, path in sorted(modules.items()):
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    is_package = path.endswith('__init__.py')
    for function in ast.walk(tree):
      if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        continue
      for node in ast.walk(function):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and imported_modules(
            node, module, is_package, modules
        ):
          found.append(f'{os.path.relpath(path, root)}:{node.lineno}: {ast.unparse(node)}')
  return sorted(set(found))


def test_the_package_has_no_import_cycle():
  graph = import_graph(REPO)
  assert len(graph) > 40 and 'ltjax.train.loop' in graph['ltjax.train']
  assert 'ltjax.data' in graph['ltjax.train.loop']  # 'from ltjax import data'.
  assert 'ltjax.train.sharding' in graph['ltjax.train.loop']  # 'from ltjax.train import ...'.
  cycle = find_cycle(graph)
  assert cycle is None, 'Import cycle: ' + ' -> '.join(cycle)


def test_no_function_imports_ltjax_lazily():
  found = lazy_imports(REPO)
  assert not found, (
      'Import ltjax modules at the top of the module (a lazy import hides an '
      'import cycle):\n  ' + '\n  '.join(found)
  )


def test_the_checks_find_a_planted_cycle_and_a_lazy_import(tmp_path):
  shutil.copytree(
      os.path.join(REPO, PACKAGE), tmp_path / PACKAGE, ignore=shutil.ignore_patterns('__pycache__')
  )
  longtail = tmp_path / PACKAGE / 'data' / 'longtail.py'
  longtail.write_text(longtail.read_text() + '\nfrom ltjax.train import loop\n')
  cycle = find_cycle(import_graph(str(tmp_path)))
  assert cycle and cycle[0] == cycle[-1] and 'ltjax.train.loop' in cycle, cycle
  assert 'ltjax.data.longtail' in cycle, cycle
  metrics = tmp_path / PACKAGE / 'eval' / 'metrics.py'
  metrics.write_text(
      metrics.read_text() + '\n\ndef late():\n  from .. import train\n'
      '  import numpy\n  return train, numpy\n'
  )
  found = lazy_imports(str(tmp_path))
  assert found == [
      f'{PACKAGE}/eval/metrics.py:{len(metrics.read_text().splitlines()) - 2}: '
      'from .. import train'
  ], found


def _normalized(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def declared_distributions(setup_cfg_text):
  """({install_requires}, {extra: {distributions}}) of a setup.cfg, names normalised."""
  parser = configparser.ConfigParser()
  parser.read_string(setup_cfg_text)

  def names(value):
    lines = (line.split('#')[0].strip() for line in value.splitlines())
    return {_normalized(re.match(r'[A-Za-z0-9_.-]+', line).group()) for line in lines if line}

  extras = parser['options.extras_require'] if parser.has_section('options.extras_require') else {}
  return names(parser['options']['install_requires']), {k: names(v) for k, v in extras.items()}


def third_party_imports(root):
  """{top-level module: ['path:line', ...]} imported by INSTALLED_CODE, stdlib and ltjax aside."""
  found = {}
  for top in INSTALLED_CODE:
    for directory, _, files in os.walk(os.path.join(root, top)):
      for name in sorted(files):
        if not name.endswith('.py'):
          continue
        path = os.path.join(directory, name)
        with open(path) as f:
          tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
          if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
          elif isinstance(node, ast.ImportFrom) and not node.level:
            modules = [node.module]
          else:
            continue
          for module in modules:
            module = module.split('.')[0]
            if module not in sys.stdlib_module_names and module != PACKAGE:
              found.setdefault(module, []).append(f'{os.path.relpath(path, root)}:{node.lineno}')
  return found


def undeclared_imports(root, setup_cfg_text):
  """['module (distribution) from path:line: what to declare'] for each import not declared."""
  required, extras = declared_distributions(setup_cfg_text)
  distributions = importlib.metadata.packages_distributions()
  problems = []
  for module, where in sorted(third_party_imports(root).items()):
    if module == 'configs':
      problems.append(
          f'{module} from {where[0]}: import the recipes as ltjax.configs (the wheel has no '
          'top-level configs package)'
      )
      continue
    provided_by = {_normalized(d) for d in distributions.get(module, ())}
    if not provided_by and module in OPTIONAL_IMPORTS:  # An extra this environment lacks:
      # its distributions named after the module ('nvidia' -> nvidia-dali-cuda120), if declared.
      extra_names = extras.get(OPTIONAL_IMPORTS[module], set())
      provided_by = {d for d in extra_names if d.startswith(_normalized(module))} or {
          _normalized(module)
      }
    if not provided_by:
      problems.append(f'{module} from {where[0]}: no installed distribution provides it')
      continue
    extra = OPTIONAL_IMPORTS.get(module)
    declared = extras.get(extra, set()) if extra else required
    if not provided_by & declared:
      place = f'the {extra} extra' if extra else 'install_requires'
      problems.append(
          f'{module} ({" or ".join(sorted(provided_by))}) from {where[0]}: add it to {place} '
          'of setup.cfg'
      )
  return problems


def test_every_imported_package_is_declared():
  with open(os.path.join(REPO, 'setup.cfg')) as f:
    setup_cfg = f.read()
  imports = third_party_imports(REPO)
  assert {'jax', 'flax', 'etils', 'ml_collections'} <= set(imports)
  problems = undeclared_imports(REPO, setup_cfg)
  assert not problems, 'Imported but not declared:\n  ' + '\n  '.join(problems)
  required, extras = declared_distributions(setup_cfg)
  assert {'gcsfs', 'fsspec'} <= extras['gcs'] and 'etils' in required


def test_the_declaration_check_finds_a_missing_package():
  with open(os.path.join(REPO, 'setup.cfg')) as f:
    setup_cfg = f.read()
  without_etils = re.sub(r'\n\s*etils\[epath\][^\n]*', '', setup_cfg)
  assert without_etils != setup_cfg
  problems = undeclared_imports(REPO, without_etils)
  assert len(problems) == 1 and problems[0].startswith('etils (etils) from '), problems
  assert 'add it to install_requires' in problems[0]
  without_tfds = setup_cfg.replace('tfds =\n', 'tfds_gone =\n')
  assert undeclared_imports(REPO, without_tfds)[0].startswith('tensorflow_datasets')
