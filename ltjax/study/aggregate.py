"""A study's table from its cells' records: never by re-running anything.

Per cell (``<study>/<method>/seed<k>``) the records are ``results.json`` (the
run's test metrics per stage, ``ltjax.train.results``), ``cell.json`` (how the
runner made it, ``ltjax.study.runner``) and, when the study asked for it,
``report/report.json`` (``ltjax.eval.report``). Per method over its finished
seeds:

  mean, std   of overall / many / medium / few test accuracy of the final model
              (post-hoc adjusted when the method chose an adjustment; the
              unadjusted numbers are kept beside); std is the sample standard
              deviation (ddof 1), as the papers' "mean +- std over seeds";
  best        the seed with the highest overall accuracy, with its groups
              ("best of N runs", as LORT reports);
  best evaluation  the final stage's highest overall test accuracy over its
              evaluations (its ``metrics.jsonl``), mean over seeds: what the
              official code of these papers reports, since each keeps its
              best epoch on the test set. A lower bound of an every-epoch
              best where a run evaluates less often; none for a run whose
              final number is a post-hoc adjustment, which is chosen for the
              final model only;
  stage1      the same of stage 1, for two-stage methods;
  per-class   mean accuracy per class, with the training counts;
  report      mean of L_i / r_i / weight and feature norm group summaries;
  wall time   seconds per cell (stage 1 counted once, from the cell it was
              reused from; every process of a resumed cell, see
              ltjax.train.wall_time: marked >= where a record cannot tell the
              earlier ones') and stage 1's median training images/s.

``write`` puts ``study.json``, ``study.md`` (the markdown table) and two plots
(accuracy by group with std error bars; per-class accuracy against training
count, one line per method) in the study's workdir.
"""

import os

from matplotlib import figure
import ml_collections
import numpy as np

from ltjax import files
from ltjax.study import cells as study_cells
from ltjax.study import runner
from ltjax.train import results as run_results
from ltjax.train import stages
from ltjax.train import writer
from ltjax.train.config_check import flatten

GROUPS = ('accuracy', 'many', 'medium', 'few')
REPORT_GROUPS = (
    ('logits_magnitude_groups', 'L_i'),
    ('regularized_std_groups', 'r_i'),
    ('weight_norm_groups', 'weight norm'),
    ('feature_norm_groups', 'feature norm'),
)


def _groups(metrics: dict) -> dict[str, float]:
  return {g: (np.nan if metrics.get(g) is None else 100 * metrics[g]) for g in GROUPS}


def cell_record(cell: study_cells.Cell) -> dict | None:
  """What aggregation needs of one finished cell (None if it has not finished)."""
  run = run_results.read_json(files.join(cell.workdir, run_results.FILENAME))
  if run is None:
    return None
  meta = runner.read_cell_record(cell)
  final = run['stages'][run['final']]
  record = {
      'seed': cell.seed,
      'final': _groups(run_results.final_metrics(run)),
      'unadjusted': _groups(final['test']),
      'posthoc': final.get('posthoc')
      and {
          'method': final['posthoc']['method'],
          'value': final['posthoc']['value'],
      },
      'per_class_accuracy': run_results.final_metrics(run)['per_class_accuracy'],
      'train_counts': final['train_counts'],
      'stage1': _groups(run['stages'][stages.STAGE1]['test']) if len(run['stages']) > 1 else None,
      # Stage 1's: the backbone's training (a re-training stage on cached features is far faster).
      'images_per_second': run['stages'][stages.STAGE1].get('images_per_second'),
  }
  wall = {name: s['wall_seconds'] for name, s in run['stages'].items()}
  complete = {name: _wall_complete(s) for name, s in run['stages'].items()}
  if meta.get('stage1_from'):  # Stage 1 was trained once, in another cell.
    source = run_results.read_json(
        files.normpath(
            files.join(os.path.dirname(cell.workdir), meta['stage1_from'], run_results.FILENAME)
        )
    )
    if source is not None:
      wall[stages.STAGE1] = source['stages'][stages.STAGE1]['wall_seconds']
      complete[stages.STAGE1] = _wall_complete(source['stages'][stages.STAGE1])
  record['best_evaluation'] = _best_evaluation(cell.workdir, run)
  record['wall_seconds'] = float(sum(wall.values()))
  record['wall_seconds_complete'] = all(complete.values())
  record['stage1_from'] = meta.get('stage1_from')
  report = run_results.read_json(files.join(cell.workdir, runner.REPORT_DIR, 'report.json'))
  if report is not None:
    record['report'] = {
        label: report[key] for key, label in REPORT_GROUPS if report.get(key) is not None
    }
  return record


def _best_evaluation(workdir: str, run: dict) -> dict | None:
  """{'accuracy', 'epoch'} of the final stage's best test evaluation (None: post-hoc, or none)."""
  if run['stages'][run['final']].get('posthoc'):
    return None
  folder = workdir if run['final'] == stages.STAGE1 else files.join(workdir, run['final'])
  rows = [
      r
      for r in writer.read_rows(files.join(folder, run_results.METRICS_FILENAME))
      if r.get('split') == 'test' and r.get('accuracy') is not None
  ]
  if not rows:
    return None
  best = max(rows, key=lambda r: r['accuracy'])
  return {'accuracy': 100 * best['accuracy'], 'epoch': best['epoch']}


def _mean_std(rows: list[dict], keys) -> tuple[dict, dict]:
  values = {k: np.array([r[k] for r in rows], float) for k in keys}
  mean = {k: float(np.mean(v)) for k, v in values.items()}
  std = {k: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan for k, v in values.items()}
  return mean, std


def summarize(study: ml_collections.ConfigDict, workdir: str) -> dict:
  """{'methods': [per-method summary], 'seeds', 'common'} from the cells' records."""
  methods = study_cells.method_table(study)
  by_method = {name: [] for name in methods}
  for cell in study_cells.cells(study, workdir):
    by_method[cell.method].append((cell, cell_record(cell)))
  out = []
  for name, pairs in by_method.items():
    done = [r for _, r in pairs if r is not None]
    entry = {
        'name': name,
        'label': methods[name]['label'],
        'recipe': methods[name]['recipe'],
        'overrides': methods[name]['overrides'],
        'seeds_done': [r['seed'] for r in done],
        'seeds_missing': [c.seed for c, r in pairs if r is None],
        'cells': done,
    }
    if done:
      entry['mean'], entry['std'] = _mean_std([r['final'] for r in done], GROUPS)
      entry['unadjusted_mean'], _ = _mean_std([r['unadjusted'] for r in done], GROUPS)
      best = max(done, key=lambda r: r['final']['accuracy'])
      entry['best'] = {'seed': best['seed'], **best['final']}
      if all(r['best_evaluation'] for r in done):
        entry['best_evaluation_mean'] = float(
            np.mean([r['best_evaluation']['accuracy'] for r in done])
        )
      if all(r['stage1'] is not None for r in done):
        entry['stage1_mean'], entry['stage1_std'] = _mean_std([r['stage1'] for r in done], GROUPS)
      entry['per_class_accuracy'] = (
          100 * np.mean([r['per_class_accuracy'] for r in done], axis=0)
      ).tolist()
      entry['train_counts'] = done[0]['train_counts']
      entry['wall_seconds'] = float(np.mean([r['wall_seconds'] for r in done]))
      entry['wall_seconds_complete'] = all(r['wall_seconds_complete'] for r in done)
      throughput = [r['images_per_second'] for r in done if r['images_per_second']]
      entry['images_per_second'] = float(np.mean(throughput)) if throughput else None
      reports = [r['report'] for r in done if 'report' in r]
      if reports:
        entry['report'] = {
            label: {
                g: float(
                    np.mean([np.nan if rep[label][g] is None else rep[label][g] for rep in reports])
                )
                for g in reports[0][label]
            }
            for label in reports[0]
        }
    out.append(entry)
  return {
      'seeds': list(study.seeds),
      'common': flatten(study.get('common') or {}),
      'methods': out,
  }


def _wall_complete(stage_record: dict) -> bool:
  # Records from before wall_time.json: a resumed stage's time is its last process's.
  return stage_record.get('wall_seconds_complete', not stage_record.get('resumed', False))


def _pm(mean: float, std: float) -> str:
  if np.isnan(mean):
    return '–'
  return f'{mean:.2f}' if np.isnan(std) else f'{mean:.2f} ± {std:.2f}'


def markdown_table(summary: dict) -> str:
  """The table: one row per method, groups as mean ± std, best-of-N, stage 1, time."""
  lines = [
      '| method | seeds | all | many | medium | few | best of N (all) | best evaluation (all) '
      '| stage 1 (all) | L_i many / few | min / cell | img/s |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for m in summary['methods']:
    if not m['cells']:
      lines.append(f'| {m["label"]} | 0 | not run | | | | | | | | | |')
      continue
    best_evaluation = (
        f'{m["best_evaluation_mean"]:.2f}' if m.get('best_evaluation_mean') is not None else ''
    )
    mean, std = m['mean'], m['std']
    groups = ' | '.join(_pm(mean[g], std[g]) for g in GROUPS)
    stage1 = (
        _pm(m['stage1_mean']['accuracy'], m['stage1_std']['accuracy']) if 'stage1_mean' in m else ''
    )
    li = ''
    if 'report' in m and 'L_i' in m['report']:
      li = f'{m["report"]["L_i"]["many"]:.2f} / {m["report"]["L_i"]["few"]:.2f}'
    speed = f'{m["images_per_second"]:.0f}' if m['images_per_second'] else ''
    minutes = ('' if m['wall_seconds_complete'] else '≥ ') + f'{m["wall_seconds"] / 60:.1f}'
    lines.append(
        f'| {m["label"]} | {len(m["cells"])} | {groups} | {m["best"]["accuracy"]:.2f} '
        f'| {best_evaluation} | {stage1} | {li} | {minutes} | {speed} |'
    )
  lines += [
      '',
      'all / many / medium / few: the final model (mean ± std over seeds). Best evaluation: the '
      "final stage's best test evaluation (mean over seeds), what the papers' official code "
      'reports (it keeps the best epoch on the test set); a lower bound of an every-epoch best '
      'where a run evaluates less often; blank where the final number is a post-hoc adjustment.',
  ]
  if not all(m['wall_seconds_complete'] for m in summary['methods'] if m['cells']):
    lines += [
        '',
        '≥: a cell resumed from a checkpoint older than its time record '
        '(ltjax.train.wall_time); its minutes are those of the process that finished it.',
    ]
  return '\n'.join(lines)


def plot_groups(summary: dict, path: str) -> str:
  """Accuracy by group (all / many / medium / few) per method, std as error bars."""
  methods = [m for m in summary['methods'] if m['cells']]
  fig = figure.Figure(figsize=(max(8, 0.55 * len(methods) + 2), 4.5), dpi=120)
  ax = fig.subplots()
  x = np.arange(len(methods))
  width = 0.8 / len(GROUPS)
  for i, g in enumerate(GROUPS):
    means = [m['mean'][g] for m in methods]
    stds = [0 if np.isnan(m['std'][g]) else m['std'][g] for m in methods]
    ax.bar(x + (i - 1.5) * width, means, width, yerr=stds, capsize=2, label=g)
  ax.set_xticks(x)
  ax.set_xticklabels([m['label'] for m in methods], rotation=60, ha='right', fontsize=8)
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(0, 100)
  ax.grid(axis='y', alpha=0.3)
  ax.legend(ncols=4, fontsize=8, loc='upper left')
  fig.tight_layout()
  return files.save_figure(fig, path)


def plot_per_class(summary: dict, path: str) -> str:
  """Mean per-class accuracy against training count, one line per method."""
  methods = [m for m in summary['methods'] if m['cells']]
  fig = figure.Figure(figsize=(9, 5), dpi=120)
  ax = fig.subplots()
  for m in methods:
    counts = np.asarray(m['train_counts'])
    order = np.argsort(counts)
    ax.plot(
        counts[order],
        np.asarray(m['per_class_accuracy'])[order],
        marker='.',
        lw=1,
        label=m['label'],
    )
  ax.set_xscale('log')
  ax.set_xlabel('training samples of the class')
  ax.set_ylabel('test accuracy (%), mean over seeds')
  ax.set_ylim(-2, 102)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, ncols=2, loc='lower right')
  fig.tight_layout()
  return files.save_figure(fig, path)


def write(summary: dict, outdir: str) -> list[str]:
  """study.json, study.md and the two plots under ``outdir``; returns the paths."""
  files.makedirs(outdir)
  json_path = files.join(outdir, 'study.json')
  run_results.write_json(json_path, summary)
  md_path = files.join(outdir, 'study.md')
  files.write_text(md_path, markdown_table(summary) + '\n')
  paths = [json_path, md_path]
  if any(m['cells'] for m in summary['methods']):
    paths.append(plot_groups(summary, files.join(outdir, 'study_groups.png')))
    paths.append(plot_per_class(summary, files.join(outdir, 'study_per_class.png')))
  return paths
