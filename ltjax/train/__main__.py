r"""Trains and evaluates a config: the command-line entry point of ltjax.

    python -m ltjax.train --config=configs/default.py --workdir=runs/default
    python -m ltjax.train --config=configs/default.py --config.optim.lr=0.02 \
        --workdir=runs/lr002

(``python launch/train.py ...`` in a checkout is the same command.) A
``--config`` path that is not a file is looked up among the recipes installed
with ltjax (``configs/default.py`` works in any directory; see
``ltjax.config_files``).

A workdir that already holds a checkpoint is resumed -- with the same config
only: a changed key stops with the list of differences, unless named in
``--resume_allow=num_epochs,...`` (a deliberate change). SIGTERM or Ctrl-C
saves a checkpoint at the next step and exits. Everything else lives in
``ltjax.train.train_and_evaluate``; this file only parses flags and sets up
the process (JAX configuration, multi-host initialisation).

Exit codes (``ltjax.train.stopping``): 0 finished; 1 unexpected error; 2 bad
input (config, data, workdir: fix it, a retry fails again); 3 diverged (a
non-finite loss; the last good checkpoint is kept); 69 the workdir is held by
another run that may still be alive (retry later: a lease not renewed for 3
minutes is taken over); 75 stopped by a signal or a preemption, wherever it
came (a step, an evaluation, the data loading, between stages), with
everything finished saved (rerun the same command to resume).
"""

import logging as std_logging

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ltjax import cli
from ltjax.train import multihost
from ltjax.train import train_and_evaluate

config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
cli.define_compilation_cache_flag()
flags.DEFINE_list(
    'resume_allow',
    [],
    'Config keys (or prefixes ending in ".") that may differ from the workdir\'s recorded '
    'config when resuming, e.g. num_epochs: a deliberate change to a run.',
)
flags.DEFINE_bool(
    'multihost',
    False,
    'Join the processes of a multi-host job: jax.distributed.initialize() with the settings JAX '
    'detects or reads from the environment (ltjax.train.multihost).',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost.initialize(flags.FLAGS.multihost)  # Also: a forgotten --multihost is named.
  cli.use_compilation_cache(flags.FLAGS.compilation_cache)
  logging.set_verbosity(logging.INFO)
  # orbax logs every step of every save at INFO; keep its warnings only.
  std_logging.getLogger('absl').addFilter(
      lambda record: record.levelno >= std_logging.WARNING or 'orbax' not in record.pathname
  )

  with cli.exit_codes():
    train_and_evaluate(
        flags.FLAGS.config, flags.FLAGS.workdir, resume_allow=tuple(flags.FLAGS.resume_allow)
    )


def run():
  """Resolves ``--config`` (ltjax.config_files), then runs ``main`` as an absl app."""
  cli.run(main, 'config')


if __name__ == '__main__':
  run()
