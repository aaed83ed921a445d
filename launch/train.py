r"""Trains and evaluates a config: the command-line entry point of ltjax.

    python launch/train.py --config=configs/default.py --workdir=runs/default
    python launch/train.py --config=configs/default.py --config.optim.lr=0.02 \
        --workdir=runs/lr002

A workdir that already holds a checkpoint is resumed -- with the same config
only: a changed key stops with the list of differences, unless named in
``--resume_allow=num_epochs,...`` (a deliberate change). SIGTERM or Ctrl-C
saves a checkpoint at the next step and exits. Everything else lives in
``ltjax.train.train_and_evaluate``; this file only parses flags and sets up
the process (JAX configuration, multi-host initialisation).

Exit codes (``ltjax.train.stopping``): 0 finished; 1 unexpected error; 2 bad
input (config, data, workdir: fix it, a retry fails again); 3 diverged (a
non-finite loss; the last good checkpoint is kept); 75 stopped by a signal or
a preemption with the checkpoint saved (rerun the same command to resume).
"""

import logging as std_logging
import os
import sys

# Make `configs` importable when run as `python launch/train.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
flags.DEFINE_string(
    'compilation_cache',
    os.path.expanduser('~/.cache/ltjax/jax'),
    'JAX persistent compilation cache directory ("" disables it).',
)
flags.DEFINE_list(
    'resume_allow',
    [],
    'Config keys (or prefixes ending in ".") that may differ from the workdir\'s recorded '
    'config when resuming, e.g. num_epochs: a deliberate change to a run.',
)
flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (TPU pods, ' 'multi-node GPU).'
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if flags.FLAGS.multihost:
    jax.distributed.initialize()
  if flags.FLAGS.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', flags.FLAGS.compilation_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  logging.set_verbosity(logging.INFO)
  # orbax logs every step of every save at INFO; keep its warnings only.
  std_logging.getLogger('absl').addFilter(
      lambda record: record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname
  )
  from ltjax.data.listfile import UnreadableImageError  # pylint: disable=g-import-not-at-top
  from ltjax.train import stopping  # pylint: disable=g-import-not-at-top
  from ltjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  from ltjax.train.workdir_lock import WorkdirInUseError  # pylint: disable=g-import-not-at-top

  try:
    train_and_evaluate(
        flags.FLAGS.config, flags.FLAGS.workdir, resume_allow=tuple(flags.FLAGS.resume_allow)
    )
  except stopping.Stopped as e:
    print(e, flush=True)
    sys.exit(stopping.EXIT_STOPPED)
  except FloatingPointError as e:
    logging.error('%s', e)
    sys.exit(stopping.EXIT_DIVERGED)
  except (
      ValueError,
      FileNotFoundError,
      PermissionError,
      UnreadableImageError,
      WorkdirInUseError,
  ) as e:
    logging.exception('The run cannot start or go on:')
    print(f'\nError ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
    sys.exit(stopping.EXIT_BAD_INPUT)


if __name__ == '__main__':
  app.run(main)
