r"""Runs a study: recipes x overrides x seeds, one cell (an ordinary run) after another.

    python -m ltjax.study --study=configs/studies/fashion_mnist_lt.py --workdir=runs/study
    python -m ltjax.study --study=... --workdir=... --dry_run          # the cells and states
    python -m ltjax.study --study=... --workdir=... --print_commands   # one command per cell
    python -m ltjax.study --study=... --workdir=... --aggregate_only   # the table, now

(``python launch/study.py ...`` in a checkout is the same command.) The
``--study`` path and the recipes the study names are looked up among the
files installed with ltjax when they are not files (``ltjax.config_files``).
Finished cells are skipped and an interrupted one resumes, so the same command
continues a study. On a cluster, run the printed commands as separate jobs and
then ``--aggregate_only``. The table is written to ``<workdir>/study.md`` (with
``study.json`` and plots) from the cells' records (``ltjax.study``).
"""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ltjax import cli
from ltjax import files
from ltjax.study import aggregate
from ltjax.study import cells
from ltjax.study import runner
from ltjax.train import stopping

config_flags.DEFINE_config_file(
    'study', None, 'Path to a study file (configs/studies/*.py).', lock_config=True
)
flags.DEFINE_string('workdir', None, 'Directory of the study; each cell gets a folder in it.')
flags.DEFINE_bool('dry_run', False, 'List the cells and their states; run nothing.')
flags.DEFINE_bool('print_commands', False, 'Print the python -m ltjax.train command of each cell.')
flags.DEFINE_bool(
    'aggregate_only', False, 'Write the table from the finished cells; train nothing.'
)
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['study', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  study, workdir = flags.FLAGS.study, files.absolute(flags.FLAGS.workdir)
  with cli.exit_codes('The study'):
    all_cells = cells.cells(study, workdir)
  if flags.FLAGS.print_commands:
    for cell in all_cells:
      print(cell.command())
    return
  if flags.FLAGS.dry_run:
    for cell in all_cells:
      print(f'{cell.state():8s} {cell.method} seed {cell.seed}  {cell.workdir}')
    states = [cell.state() for cell in all_cells]
    print(', '.join(f'{states.count(s)} {s}' for s in (cells.DONE, cells.PARTIAL, cells.PENDING)))
    return
  failed = []
  if not flags.FLAGS.aggregate_only:
    cli.use_compilation_cache(flags.FLAGS.compilation_cache)
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger('absl').setLevel(std_logging.WARNING)
    # One stop handler for every cell and between them; exit 75 when it stops the study.
    with cli.exit_codes('The study'), stopping.handling():
      failed = runner.run(study, workdir, log=lambda line: print(line, flush=True))
  summary = aggregate.summarize(study, workdir)
  for path in aggregate.write(summary, workdir):
    print(f'Wrote {path}')
  print(aggregate.markdown_table(summary))
  if failed:
    sys.exit(
        f'{len(failed)} cells failed: ' + ', '.join(f'{c.method}/seed{c.seed}' for c in failed)
    )


def run():
  """Resolves ``--study`` (ltjax.config_files), then runs ``main`` as an absl app."""
  cli.run(main, 'study')


if __name__ == '__main__':
  run()
