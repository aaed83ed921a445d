"""A study: recipes x overrides x seeds, each cell one ordinary run in its own workdir.

A study file is a Python file with ``get_config()`` returning an
``ml_collections.ConfigDict`` (so it is versioned like a recipe and overridden
from the command line, ``--study.seeds=(0,)``):

  seeds     the seeds every method runs with (``config.seed``).
  common    a nested dict of config keys set on every method's config, after
            its recipe (the study's shared backbone, epoch budget, schedule).
  methods   name -> {recipe, overrides, label, seeds}: ``recipe`` is a config
            file as ``--config`` takes it (``configs/x.py`` or
            ``configs/x.py:arg`` for a recipe of ltjax, or a path of your own;
            resolved by ``ltjax.config_files``), ``overrides`` a nested dict of
            config keys set after ``common``, ``label`` the row name of the
            table, ``seeds`` (optional) the study's seeds this method runs
            with (default: all; e.g. more seeds only for the contested rows).
  report    run ``ltjax.eval``'s report (L_i, r_i, norms) on each finished cell.

A cell is (method, seed) in ``<study workdir>/<method>/seed<seed>``: exactly
the run ``python -m ltjax.train --config=<recipe> --config.<key>=<value> ...
--workdir=<that dir>`` would make (``command`` prints it for a scheduler; the
same command works in a checkout and with an installed wheel).
Its state is read from its files: ``done`` once the run wrote its
``results.json`` (``ltjax.train.loop``), ``partial`` when it has started
(a ``config.json``), else ``pending``.
"""

import dataclasses
import difflib
import importlib.util
import shlex
from typing import Any

import ml_collections

from ltjax import config_files
from ltjax import files
from ltjax.train import results as run_results
from ltjax.train.config_check import flatten

DONE, PARTIAL, PENDING = 'done', 'partial', 'pending'


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``path.py`` or ``path.py:arg`` -> its ``get_config()`` (or ``get_config(arg)``).

  The path is resolved as the ``--config`` flag's (``ltjax.config_files.resolve``): a file,
  else an installed recipe (``configs/ce_default.py``), else a FileNotFoundError naming both.
  """
  full, _, arg = config_files.resolve(spec).partition(':')
  module_spec = importlib.util.spec_from_file_location(f'_ltjax_config_{abs(hash(full))}', full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any], what: str):
  """Sets flattened keys of existing fields; an unknown key or a wrong type fails naming both."""
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for i, part in enumerate(parents + [leaf]):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
        near = difflib.get_close_matches(part, valid, n=1)
        hint = f' Did you mean {near[0]!r}?' if near else ''
        raise ValueError(
            f'{what}: cannot set config.{key}={value!r}: config.{".".join(parents[:i] + [part])} '
            f'does not exist.{hint}'
        )
      if i < len(parents):
        node = node[part]
    try:
      node[leaf] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f'{what}: cannot set config.{key}={value!r}: {e}') from e


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of a study: a method at a seed."""

  method: str
  seed: int
  recipe: str
  overrides: dict[str, Any]  # common, then the method's, then the seed; flattened.
  workdir: str

  def config(self) -> ml_collections.ConfigDict:
    config = load_config_file(self.recipe)
    apply_overrides(config, self.overrides, f'study method {self.method!r}')
    return config

  def state(self) -> str:
    if files.exists(files.join(self.workdir, run_results.FILENAME)):
      return DONE
    if files.exists(files.join(self.workdir, 'config.json')):
      return PARTIAL
    return PENDING

  def command(self) -> str:
    """The ``python -m ltjax.train`` command line that runs this cell.

    The module form, not ``launch/train.py``: it runs from any directory where ltjax is
    installed (and from the top of a checkout), and its ``--config`` finds the recipe alike.
    """
    args = ['python', '-m', 'ltjax.train', f'--config={self.recipe}']
    args += [f'--config.{k}={_flag_value(v)}' for k, v in self.overrides.items()]
    args.append(f'--workdir={self.workdir}')
    return ' '.join(shlex.quote(a) for a in args)


def _flag_value(value: Any) -> str:
  # config_flags parses a flag value as a Python literal for non-string fields.
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  return str(value)


def method_table(study: ml_collections.ConfigDict) -> dict[str, dict]:
  """name -> {'recipe', 'overrides' (flattened), 'label'}, checked for known keys."""
  methods = {}
  for name, method in study.methods.items():
    method = method.to_dict() if isinstance(method, ml_collections.ConfigDict) else dict(method)
    unknown = set(method) - {'recipe', 'overrides', 'label', 'seeds'}
    if unknown or 'recipe' not in method:
      raise ValueError(
          f'study.methods.{name} has keys {sorted(method)}; it needs recipe and may have '
          'overrides, label and seeds.'
      )
    methods[name] = {
        'recipe': method['recipe'],
        'overrides': flatten(method.get('overrides') or {}),
        'label': method.get('label') or name,
        'seeds': tuple(int(s) for s in method['seeds']) if 'seeds' in method else None,
    }
  return methods


def cells(study: ml_collections.ConfigDict, workdir: str) -> list[Cell]:
  """Every (method, seed): seed by seed, methods in the study's order within a seed.

  Seed-major, so a study stopped early has whole tables for its first seeds.
  """
  common = flatten(study.get('common') or {})
  methods = method_table(study)
  out = []
  for seed in study.seeds:
    for name, method in methods.items():
      if method['seeds'] is not None and int(seed) not in method['seeds']:
        continue
      out.append(
          Cell(
              method=name,
              seed=int(seed),
              recipe=method['recipe'],
              overrides={**common, **method['overrides'], 'seed': int(seed)},
              workdir=files.join(workdir, name, f'seed{int(seed)}'),
          )
      )
  return out
