"""Command-line plumbing shared by the entry points.

``python -m ltjax.train``, ``ltjax.eval``, ``ltjax.study`` (and the
``launch/`` scripts that wrap them) each define their own flags; what they
share lives here: the ``--compilation_cache`` flag and its JAX settings, and
``run``, which resolves a ``--config``/``--study`` path against the installed
recipes (``ltjax.config_files``) before absl parses the flags.
"""

import ast
import os
import sys

from absl import app
from absl import flags
import jax

from ltjax import config_files
from ltjax.train import stopping

DEFAULT_COMPILATION_CACHE = os.path.expanduser('~/.cache/ltjax/jax')


def define_compilation_cache_flag() -> None:
  flags.DEFINE_string(
      'compilation_cache',
      DEFAULT_COMPILATION_CACHE,
      'JAX persistent compilation cache directory ("" disables it).',
  )


def use_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache in ``directory`` ('' leaves it off)."""
  if directory:
    jax.config.update('jax_compilation_cache_dir', directory)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def run(main, config_flag: str | None = None) -> None:
  """Runs ``main`` as an absl app, after resolving ``--<config_flag>`` (exit 2 if missing)."""
  if config_flag is not None:
    try:
      sys.argv = config_files.resolve_flag(sys.argv, config_flag)
    except FileNotFoundError as e:
      print(f'Error (FileNotFoundError): {e}', file=sys.stderr, flush=True)
      sys.exit(stopping.EXIT_BAD_INPUT)
  app.run(main)


def parse_overrides(pairs, *, literal_values: bool = False) -> dict:
  """``--override key=value`` flags -> {key: value}; a pair without '=' is a usage error.

  ``literal_values``: values are Python literals where they parse (``20``, ``(160,)``), else
  strings; otherwise every value stays a string.
  """
  out = {}
  for pair in pairs or ():
    key, sep, value = pair.partition('=')
    if not sep:
      raise app.UsageError(f'--override needs key=value, got {pair!r}.')
    out[key] = value
    if literal_values:
      try:
        out[key] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        pass
  return out
