"""Tests for the import structure of ltjax/: no import cycle and no lazy ltjax imports."""

import ast
import os
import shutil

from helpers import REPO

PACKAGE = 'ltjax'


def module_files(root):
  """{module name: path} of every .py file of the package under ``root``."""
  modules = {}
  for directory, _, files in os.walk(os.path.join(root, PACKAGE)):
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
