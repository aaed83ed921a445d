r"""LORT's Table 1: classifier re-training methods on one finished stage 1, compared.

    python launch/retraining_study.py --stage1_workdir=runs/lort_cifar100_lt_ir100 \
        --output=runs/lort_cifar100_lt_ir100_table1
    python launch/retraining_study.py --stage1_workdir=runs/ce --methods=crt,lws,lort \
        --override=stage2.num_epochs=20 --override=stage2.loss.lort_delta=0.99

Re-trains the classifier of the stage-1 workdir's best checkpoint with each
method of ``ltjax.train.retraining_study.METHODS`` in ``<output>/<method>``
(resumed, not retrained, when run again), writes each method's report and
``retraining_table.txt`` / ``.json``, ``comparison.txt`` / ``.json`` and the
overlaid plots in ``<output>``, and prints the table. ``--override`` values
are Python literals (numbers, tuples, booleans) or else strings.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from ltjax import cli  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('stage1_workdir', None, 'A finished stage 1 written by launch/train.py.')
flags.DEFINE_string('output', None, 'Output directory (default <stage1_workdir>/retraining_study).')
flags.DEFINE_list('methods', None, 'Comma-separated methods (default: all of METHODS).')
flags.DEFINE_multi_string(
    'override',
    None,
    'Config change for every method, e.g. --override=stage2.num_epochs=20 (repeatable).',
)
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['stage1_workdir'])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.use_compilation_cache(FLAGS.compilation_cache)
  from ltjax.train import retraining_study  # pylint: disable=g-import-not-at-top

  unknown = [m for m in FLAGS.methods or () if m not in retraining_study.METHODS]
  if unknown:
    raise app.UsageError(
        f'Unknown --methods {unknown}; valid: {",".join(retraining_study.METHODS)}.'
    )
  output = FLAGS.output or os.path.join(FLAGS.stage1_workdir, 'retraining_study')
  result = retraining_study.run_study(
      FLAGS.stage1_workdir,
      output,
      methods=FLAGS.methods,
      overrides=cli.parse_overrides(FLAGS.override, literal_values=True),
  )
  print(result['table'])
  print(f'Wrote {", ".join(result["files"])}')


if __name__ == '__main__':
  app.run(main)
