r"""Trains and evaluates a config: the command-line entry point of ltjax.

    python launch/train.py --config=configs/default.py --workdir=runs/default
    python launch/train.py --config=configs/default.py --config.optim.lr=0.02 \
        --workdir=runs/lr002

A workdir that already holds a checkpoint is resumed. Everything else lives in
``ltjax.train.train_and_evaluate``; this file only parses flags and sets up
the process (JAX configuration, multi-host initialisation).
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
  from ltjax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top

  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
