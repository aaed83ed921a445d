"""Command-line plumbing shared by the entry points.

``python -m ltjax.train``, ``ltjax.eval``, ``ltjax.study`` (and the
``launch/`` scripts that wrap them) each define their own flags; what they
share lives here: the ``--compilation_cache`` flag and its JAX settings,
``run``, which resolves a ``--config``/``--study`` path against the installed
recipes (``ltjax.config_files``) before absl parses the flags (a bad flag exits
2, not absl's 1), and ``exit_codes``, which turns the errors of a run into the
documented exit codes (``ltjax.train.stopping``).
"""

import ast
import contextlib
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from ltjax import config_files
from ltjax.data.listfile import UnreadableImageError
from ltjax.train import stopping
from ltjax.train.workdir_lock import WorkdirBusyError

# What a user's input causes (a config, a file, a path): a retry fails the same way.
BAD_INPUT = (ValueError, FileNotFoundError, PermissionError, UnreadableImageError)

DEFAULT_COMPILATION_CACHE = os.path.expanduser('~/.cache/ltjax/jax')


def define_compilation_cache_flag() -> None:
  flags.DEFINE_string(
      'compilation_cache',
      DEFAULT_COMPILATION_CACHE,
      'JAX persistent compilation cache directory ("" disables it).',
  )


def _cache_deadlocks_cpu_collectives() -> bool:
  """Whether this is a job of several CPU processes on jaxlib >= 0.12.

  There, processes whose steps come from the persistent compilation cache wait forever in their
  first cross-process collective (measured with jaxlib 0.12.1: two processes running a jitted
  cross-process mean and multihost_utils.process_allgather finish with a cold cache and hang on
  the next, warm-cache run; jaxlib 0.10.2 finishes both).
  """
  version = tuple(int(p) for p in jax.lib.__version__.split('.')[:2] if p.isdigit())
  return version >= (0, 12) and jax.process_count() > 1 and jax.default_backend() == 'cpu'


def use_compilation_cache(directory: str) -> None:
  """JAX's persistent compilation cache in ``directory`` ('' leaves it off).

  Call it after ``multihost.initialize``: a multi-process CPU job on jaxlib >= 0.12 runs
  without the cache (``_cache_deadlocks_cpu_collectives``); it only compiles again.
  """
  if not directory:
    return
  if _cache_deadlocks_cpu_collectives():
    logging.warning(
        'Persistent compilation cache off: with jaxlib %s, CPU processes of one job deadlock in '
        'their collectives on executables loaded from it.',
        jax.lib.__version__,
    )
    return
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
  app.run(main, flags_parser=_parse_flags)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag (or a config file that fails to load) exiting 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'Error (bad flag): {e}\nPass --helpfull to list the flags.', file=sys.stderr, flush=True)
    sys.exit(stopping.EXIT_BAD_INPUT)


@contextlib.contextmanager
def exit_codes(what: str = 'The run'):
  """Ends the command with the documented exit code of the error it raised.

  75 stopped (everything finished saved; rerun to continue), 69 the workdir is
  busy (retry later), 3 diverged, 2 bad input (``BAD_INPUT``: fix it first);
  anything else propagates (1, a bug).
  """
  try:
    yield
  except stopping.Stopped as e:
    print(e, flush=True)
    sys.exit(stopping.EXIT_STOPPED)
  except WorkdirBusyError as e:  # Retryable: the holder may be alive, or its lease expiring.
    print(f'\nError ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
    sys.exit(stopping.EXIT_WORKDIR_BUSY)
  except FloatingPointError as e:
    logging.error('%s', e)
    sys.exit(stopping.EXIT_DIVERGED)
  except BAD_INPUT as e:
    logging.exception('%s cannot start or go on:', what)
    print(f'\nError ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
    sys.exit(stopping.EXIT_BAD_INPUT)


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
