r"""Evaluates trained workdirs: report.json with every diagnostic, plots, comparisons.

    python -m ltjax.eval --workdir=runs/default/stage2
    python -m ltjax.eval --workdir=runs/ce --workdir=runs/lort/stage2 \
        --output=runs/ce_vs_lort

(``python launch/eval.py ...`` in a checkout is the same command.)
One workdir: ``<output>/report.json`` (default output ``<workdir>/report``)
and its plots. Several: one report per workdir under ``<output>/<name>/`` and
``comparison.txt`` / ``comparison.json`` with overlaid plots in ``<output>``.
The metrics are described in ``ltjax.eval.report``.
"""

import os
import tempfile

from absl import app
from absl import flags
from absl import logging
import jax

from ltjax import cli
from ltjax import files
from ltjax.eval import metrics
from ltjax.eval import report as ltjax_report
from ltjax.train import multihost
from ltjax.train import workdir_report

flags.DEFINE_multi_string(
    'workdir', None, 'A workdir written by ltjax.train (repeat the ' 'flag to compare several).'
)
flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
flags.DEFINE_string(
    'output',
    None,
    'Output directory (default <workdir>/report for one ' 'workdir; required for several).',
)
flags.DEFINE_multi_string(
    'name',
    None,
    'Names of the workdirs in the comparison, in order ' '(default: the workdir paths).',
)
flags.DEFINE_integer(
    'sharpness_directions',
    10,
    'Random directions per radius of the ' 'sharpness curve (0 skips it).',
)
flags.DEFINE_integer('eval_batch_size', 0, "Evaluation batch size (0: the run's).")
flags.DEFINE_multi_string(
    'override',
    None,
    'Config changes before loading the data, e.g. ' '--override=data.data_dir=/new/place.',
)
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['workdir'])
FLAGS = flags.FLAGS


flags.DEFINE_bool(
    'multihost',
    False,
    'Join the processes of a multi-host job (jax.distributed.initialize; see ltjax.train.multihost).',
)


def _outdir(name: str, workdir: str, index: int, count: int) -> str:
  if count == 1:
    return FLAGS.output or files.join(workdir, 'report')
  return files.join(FLAGS.output, f'{index:02d}_' + os.path.basename(name.rstrip('/')))


def _check_writable(path: str) -> None:
  if jax.process_index() != 0:
    return  # Only process 0 writes the report.
  try:
    files.makedirs(path)
    if files.is_remote(path):  # A bucket: create and delete a probe object.
      probe = files.join(path, f'.write-probe-{os.getpid()}')
      files.write_bytes(probe, b'')
      files.remove(probe)
    else:
      tempfile.TemporaryFile(dir=path).close()
  except OSError as e:
    raise app.UsageError(
        f'Cannot write the report to {path} ({e}); pass --output=<a writable directory>.'
    ) from e


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  multihost.initialize(FLAGS.multihost)
  cli.use_compilation_cache(FLAGS.compilation_cache)
  workdirs = [w.rstrip('/') for w in FLAGS.workdir]
  names = FLAGS.name or [w for w in workdirs]
  if len(names) != len(workdirs):
    raise app.UsageError(f'{len(names)} --name flags for {len(workdirs)} --workdir flags.')
  if len(workdirs) > 1 and not FLAGS.output:
    raise app.UsageError('Comparing several workdirs needs --output=<directory>.')
  if FLAGS.checkpoint not in ('best', 'latest') and not FLAGS.checkpoint.isdigit():
    raise app.UsageError(f"--checkpoint={FLAGS.checkpoint!r}: use 'best', 'latest' or a step.")
  overrides = cli.parse_overrides(FLAGS.override)
  outdirs = [
      _outdir(name, workdir, i, len(workdirs))
      for i, (name, workdir) in enumerate(zip(names, workdirs))
  ]
  for outdir in outdirs + ([FLAGS.output] if len(workdirs) > 1 else []):
    _check_writable(outdir)  # Before the report is computed, not after.
  with cli.exit_codes('The evaluation'):
    reports = {}
    for name, workdir, outdir in zip(names, workdirs, outdirs):
      logging.info('Evaluating %s (%s checkpoint).', workdir, FLAGS.checkpoint)
      report = workdir_report.report_for_workdir(
          workdir,
          checkpoint=FLAGS.checkpoint,
          sharpness_directions=FLAGS.sharpness_directions,
          eval_batch_size=FLAGS.eval_batch_size or None,
          config_overrides=overrides,
      )
      reports[name] = report
      if jax.process_index() != 0:
        continue  # Every process computed the report (their devices hold the model); one writes.
      paths = ltjax_report.write_report(report, outdir, title=name)
      print(metrics.format_table(report, title=f'{name} (step {report["meta"]["step"]}):'))
      print(f'Wrote {", ".join(paths)}')
    if len(reports) > 1 and jax.process_index() == 0:
      paths = ltjax_report.compare_reports(reports, FLAGS.output)
      print(ltjax_report.format_comparison(reports))
      print(f'Wrote {", ".join(paths)}')


def run():
  """Runs ``main`` as an absl app (the entry point of ``python -m ltjax.eval``)."""
  cli.run(main)


if __name__ == '__main__':
  run()
