"""Finds a config file named on the command line: a file of the user's, or an installed recipe.

The recipes live in ``configs/`` at the top of the repository, and the wheel
installs the same files as the package ``ltjax.configs`` (in a checkout,
``ltjax/configs`` is a link to ``configs/``). So that the commands of the
README work in a checkout and from an installed wheel alike, in any directory,
a config path is resolved here before ml_collections loads it:

  1. an existing file is used as it is (relative to the working directory, or
     absolute): a user's own config always wins;
  2. otherwise ``configs/<name>.py`` -- or ``<name>.py``, ``studies/<name>.py``
     -- is looked up among the installed recipes (``RECIPES``);
  3. otherwise the error names every place it looked and the nearest recipes.

A ``:argument`` suffix (``configs/ce_cifar_lt.py:dataset=cifar100``, passed to
``get_config``) is kept. The entry points (``python -m ltjax.train``,
``ltjax.study``) resolve their ``--config`` / ``--study`` flag with
``resolve_flag`` before absl parses it; ``ltjax.study.cells`` resolves a
study's recipes with ``resolve``.
"""

import difflib
import os
import re

# The installed recipes: ltjax/configs, next to this file (a link to configs/ in a checkout).
RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'configs')
# The folder the recipes have at the top of the repository, as the commands name them.
PREFIX = 'configs'
# Modules beside the recipes that are none: the base keys and the recipes' helpers.
HELPERS = ('base.py', 'common.py', 'provenance.py')


def recipe_names() -> list[str]:
  """Every recipe as a command names it: ``configs/default.py``, ``configs/studies/x.py``, ..."""
  names = []
  for directory, subdirs, files in os.walk(RECIPES, followlinks=True):
    subdirs[:] = sorted(d for d in subdirs if not d.startswith(('_', '.')))
    for name in sorted(files):
      top_level_helper = directory == RECIPES and name in HELPERS
      if name.endswith('.py') and not name.startswith('_') and not top_level_helper:
        relative = os.path.relpath(os.path.join(directory, name), RECIPES)
        names.append('/'.join([PREFIX, *relative.split(os.sep)]))
  return names


def _recipe_parts(path: str) -> list[str] | None:
  """A relative path below ``configs/`` as parts (``configs/x.py`` and ``x.py``: ['x.py'])."""
  if os.path.isabs(path):
    return None
  parts = [p for p in os.path.normpath(path).split(os.sep) if p not in ('', '.')]
  if parts[:1] == [PREFIX]:
    parts = parts[1:]
  if not parts or '..' in parts:
    return None
  return parts


def resolve(spec: str) -> str:
  """``path.py[:arg]`` -> the same with ``path.py`` an existing file (see the module docstring).

  Raises:
    FileNotFoundError: neither the path nor an installed recipe of that name exists; the
      message lists where it looked and the nearest recipe names.
  """
  path, sep, arg = spec.partition(':')
  if re.match(r'[A-Za-z][A-Za-z0-9+.-]*://', spec):
    raise FileNotFoundError(
        f'Config file {spec!r}: config files are read from the local disk, not from a URL. '
        'Copy it to a local path and pass that path.'
    )
  if not path:
    raise FileNotFoundError(f'Config file {spec!r}: the path is empty; pass configs/<recipe>.py.')
  if os.path.isfile(path):
    return spec
  parts = _recipe_parts(path)
  installed = os.path.join(RECIPES, *parts) if parts else None
  if installed and os.path.isfile(installed):
    return installed + sep + arg
  looked = [os.path.abspath(path)] + ([installed] if installed else [])
  # Compared below configs/, which every name shares.
  below = {name[len(PREFIX) + 1 :]: name for name in recipe_names()}
  near = difflib.get_close_matches('/'.join(parts or [path]), below, n=3, cutoff=0.75)
  hint = f' Did you mean {" or ".join(below[n] for n in near)}?' if near else ''
  raise FileNotFoundError(
      f'No config file {path!r}: looked for {" and ".join(looked)}.{hint} Pass the path of a '
      f'config file, or configs/<name>.py for one of the recipes installed with ltjax (the '
      f'files in {RECIPES}).'
  )


def resolve_flag(argv: list[str], name: str) -> list[str]:
  """``argv`` with the value of ``--<name>=spec`` (or ``--<name> spec``) resolved.

  Only the flag itself: overrides such as ``--config.optim.lr=0.1`` are left alone, and so is
  everything after ``--``.
  """
  out = list(argv)
  for i in range(1, len(out)):
    arg = out[i]
    if arg == '--':
      break
    match = re.fullmatch(rf'(--?{re.escape(name)}=)(.*)', arg, flags=re.DOTALL)
    if match:
      out[i] = match.group(1) + resolve(match.group(2))
    elif re.fullmatch(rf'--?{re.escape(name)}', arg) and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
