"""The evaluation report: accuracy and every diagnostic of the papers, for one or more models.

``build_report`` turns a model's outputs (logits and features of the test set,
features of the training set, the classifier and BatchNorm parameters) into a
JSON-ready dict; ``write_report`` saves it as ``report.json`` with its plots;
``compare_reports`` puts several reports side by side (one table, overlaid
curves). ``launch/eval.py`` computes the outputs from a checkpoint and calls
these.

Top-level keys of a report (per-class values are lists indexed by class, group
summaries ``{many, medium, few}``, decile summaries lists of 10 bins from the
most to the least frequent classes):

  accuracy, balanced_accuracy, many, medium, few, per_class_accuracy
  logits_magnitude, logits_magnitude_groups, logits_magnitude_deciles   LORT Def. 1
  regularized_std, regularized_std_groups, regularized_std_deciles      LORT Def. 2
  fdr, cosine_similarity {intra, inter}, class_cosine_matrix            EWB §4
  fdr_train, cosine_similarity_train, nc1_train, etf_distance_train     the same on training features
  feature_norm, feature_norm_groups, weight_norm, weight_norm_groups    EWB §4.5, §5.1
  feature_norm_train (+ _groups, _deciles): on training features         EWB Fig. 3
  batchnorm_scale                                                       EWB §4.3
  nc1, etf_distance                                                     Papyan et al. 2020
  weight_cosine_matrix, weight_angles {pair: {mean, min, count}}        LWR
  sharpness {relative_radius, many, medium, few, all}                   CC-SAM Fig. 1
  open_set {f_measure, threshold, f_measure_softmax, ...}   when an open-set split is given
  val {accuracy, ...}                          when a validation split is given
  train_counts, class_names, meta

Feature statistics are computed on the balanced test set and, with the
``_train`` suffix, on the training features (EWB's Fig. 1/Tables 2-4 and
neural collapse are training-set quantities); the sharpness curve on the
training set, class-balanced ('all' is the mean over classes). The C x C
matrices are written to ``matrices.npz``, and into report.json only up to
``MAX_JSON_MATRIX_CLASSES`` classes.
"""

import io
from typing import Mapping, Sequence

import matplotlib
from matplotlib import figure
import numpy as np

from ltjax import files
from ltjax.eval import diagnostics
from ltjax.eval import metrics
from ltjax.eval import open_set
from ltjax.eval import plots

GROUPS = diagnostics.GROUPS
# Columns of the comparison table: (report key, header, scale).
TABLE_COLUMNS = (
    ('accuracy', 'acc', 100),
    ('balanced_accuracy', 'bal. acc', 100),
    ('many', 'many', 100),
    ('medium', 'medium', 100),
    ('few', 'few', 100),
    ('fdr', 'FDR', 1),
    ('nc1', 'NC1', 1),
    ('etf_distance', 'ETF dist.', 1),
    ('open_set_f_measure', 'open F*', 100),
)
# Matrices with more classes than this go to matrices.npz only (iNat's 8142^2 would be GBs of JSON).
MAX_JSON_MATRIX_CLASSES = 100
MATRIX_KEYS = ('class_cosine_matrix', 'weight_cosine_matrix')


def _per_class_with_summaries(
    report: dict, name: str, values: np.ndarray, train_counts, group_kwargs: dict
) -> None:
  report[name] = values
  report[f'{name}_groups'] = diagnostics.group_summary(values, train_counts, **group_kwargs)
  report[f'{name}_deciles'] = diagnostics.decile_summary(values, train_counts)


def build_report(
    test: Mapping[str, np.ndarray],
    *,
    train: Mapping[str, np.ndarray],
    kernel: np.ndarray,
    bias: np.ndarray | None,
    params,
    train_counts,
    class_names: Sequence[str] | None = None,
    val: Mapping | None = None,
    open_test: Mapping | None = None,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
    sharpness_directions: int = 10,
    meta: Mapping | None = None,
) -> dict:
  """Every metric of the module docstring.

  Args:
    test: {'logits': (N, C), 'features': (N, D), 'label': (N,)} of the test set.
    train: {'features', 'label'} of the training set (prototypes, sharpness).
    kernel, bias: the linear classifier (D, C) and (C,) the features feed;
      for other heads, the effective ones (e.g. a cosine head's normalised
      kernel times its scale).
    params: the Flax params tree (BatchNorm scales).
    train_counts: (C,) training samples per class.
    class_names: optional names.
    val: like ``test`` (accuracy only).
    open_test: {'features'} of open-set images (classes unseen in training).
    groups, group_sizes, many_threshold, few_threshold: the class groups
      (``ltjax.eval.metrics.class_groups``; ``metrics.group_options(config.eval)``).
    sharpness_directions: random directions per radius of the sharpness curve
      (0: no curve, e.g. for a head that is not affine in the features).
    meta: anything to record under 'meta' (workdir, checkpoint step, ...).

  Returns:
    A dict of numpy arrays, floats and dicts; ``to_jsonable`` makes it JSON.
  """
  counts = np.asarray(train_counts)
  num_classes = len(counts)
  group_kwargs = dict(
      groups=groups,
      group_sizes=group_sizes,
      many_threshold=many_threshold,
      few_threshold=few_threshold,
  )
  logits, features, labels = test['logits'], test['features'], test['label']
  predictions = np.argmax(logits, -1)
  report = dict(metrics.classification_metrics(predictions, labels, counts, **group_kwargs))
  _per_class_with_summaries(
      report,
      'logits_magnitude',
      diagnostics.logits_magnitude(logits, labels, num_classes),
      counts,
      group_kwargs,
  )
  _per_class_with_summaries(
      report,
      'regularized_std',
      diagnostics.regularized_std(logits, labels, num_classes),
      counts,
      group_kwargs,
  )
  report['fdr'] = diagnostics.fisher_discriminant_ratio(features, labels)
  report['cosine_similarity'] = diagnostics.cosine_similarity_stats(features, labels)
  report['class_cosine_matrix'] = diagnostics.class_mean_cosine_matrix(
      features, labels, num_classes
  )
  _per_class_with_summaries(
      report,
      'feature_norm',
      diagnostics.feature_norm_per_class(features, labels, num_classes),
      counts,
      group_kwargs,
  )
  # EWB Fig. 3 looks at training features: the norm gap is a training-set effect.
  _per_class_with_summaries(
      report,
      'feature_norm_train',
      diagnostics.feature_norm_per_class(train['features'], train['label'], num_classes),
      counts,
      group_kwargs,
  )
  _per_class_with_summaries(
      report, 'weight_norm', diagnostics.weight_norm_per_class(kernel), counts, group_kwargs
  )
  report['batchnorm_scale'] = diagnostics.batchnorm_scale_stats(params)
  report['nc1'] = diagnostics.nc1(features, labels, num_classes)
  report['etf_distance'] = diagnostics.etf_distance(features, labels, num_classes)
  train_features, train_labels = train['features'], train['label']
  report['fdr_train'] = diagnostics.fisher_discriminant_ratio(train_features, train_labels)
  report['cosine_similarity_train'] = diagnostics.cosine_similarity_stats(
      train_features, train_labels
  )
  report['nc1_train'] = diagnostics.nc1(train_features, train_labels, num_classes)
  report['etf_distance_train'] = diagnostics.etf_distance(train_features, train_labels, num_classes)
  report['weight_cosine_matrix'] = diagnostics.weight_cosine_matrix(kernel)
  report['weight_angles'] = {
      pair: {k: v for k, v in stats.items() if k != 'angles'}
      for pair, stats in diagnostics.head_tail_angles(kernel, counts, **group_kwargs).items()
  }
  report['sharpness'] = None  # Needs an affine head (see ltjax.train.workdir_report.affine_head).
  if sharpness_directions > 0:
    report['sharpness'] = diagnostics.sharpness_curve(
        train['features'],
        train['label'],
        kernel,
        bias,
        counts,
        num_directions=sharpness_directions,
        **group_kwargs,
    )
  if val is not None:
    report['val'] = metrics.classification_metrics(
        np.argmax(val['logits'], -1), val['label'], counts, **group_kwargs
    )
  if open_test is not None and len(open_test.get('features', ())):
    report['open_set'] = _open_set(test, train, open_test, num_classes)
    report['open_set_f_measure'] = report['open_set']['f_measure']
  report['train_counts'] = counts
  report['class_names'] = list(class_names) if class_names is not None else None
  report['meta'] = dict(meta or {})
  return report


def _open_set(test, train, open_test, num_classes: int) -> dict:
  """CC-SAM §4.3: prototype cosine scores, OLTR's F-measure.

  'f_measure': prototype cosine scores with the threshold maximising the
  F-measure over the score percentiles of the closed + open test images --
  an oracle upper bound (no split with open images exists to select it on),
  marked 'open F*' in comparisons. 'f_measure_softmax': OLTR's own fixed
  protocol, max softmax probability with threshold 0.1, comparable across runs.
  """
  features = np.concatenate([test['features'], open_test['features']])
  is_open = np.concatenate(
      [np.zeros(len(test['features']), bool), np.ones(len(open_test['features']), bool)]
  )
  labels = np.concatenate([test['label'], np.full(len(open_test['features']), -1)])
  scores, _ = open_set.prototype_scores(train['features'], train['label'], features, num_classes)
  predictions = np.argmax(np.concatenate([test['logits'], open_test['logits']]), -1)
  threshold, f_measure, _ = open_set.select_threshold(predictions, labels, scores, is_open=is_open)
  all_logits = np.concatenate([test['logits'], open_test['logits']])
  softmax, softmax_predictions = open_set.softmax_scores(all_logits)
  f_softmax = open_set.open_set_f_measure(
      softmax_predictions,
      labels,
      softmax,
      is_open=is_open,
      threshold=open_set.OLTR_SOFTMAX_THRESHOLD,
  )
  return {
      'f_measure': float(f_measure),
      'threshold': float(threshold),
      'f_measure_softmax': float(f_softmax),
      'softmax_threshold': float(open_set.OLTR_SOFTMAX_THRESHOLD),
      'score': 'max cosine similarity to the class means of training features',
      'threshold_selection': 'best over score percentiles of the test images (upper bound)',
      'closed_images': int((~is_open).sum()),
      'open_images': int(is_open.sum()),
      'mean_score_closed': float(scores[~is_open].mean()),
      'mean_score_open': float(scores[is_open].mean()),
  }


def to_jsonable(value):
  """numpy arrays and scalars -> lists and Python numbers; NaN/inf -> None."""
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, np.ndarray):
    return to_jsonable(value.tolist())
  if isinstance(value, (np.floating, float)):
    value = float(value)
    return value if np.isfinite(value) else None
  if isinstance(value, np.integer):
    return int(value)
  return value


def write_report(report: dict, outdir: str, *, title: str = '') -> list[str]:
  """``report.json`` and the plots under ``outdir``; returns the paths written."""
  files.makedirs(outdir)
  counts = np.asarray(report['train_counts'])
  matrices = {k: np.asarray(report[k], np.float32) for k in MATRIX_KEYS if k in report}
  written = [files.join(outdir, 'matrices.npz'), files.join(outdir, 'report.json')]
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **matrices)
  files.write_bytes(written[0], buffer.getvalue())
  in_json = dict(report)
  if len(counts) > MAX_JSON_MATRIX_CLASSES:
    for key in matrices:
      in_json[key] = 'matrices.npz'
  files.write_json(written[1], to_jsonable(in_json), indent=1)

  out = files.join(outdir, 'per_class_accuracy.png')
  plots.plot_per_class_accuracy(
      report['per_class_accuracy'], counts, out, class_names=report.get('class_names'), title=title
  )
  written.append(out)
  written.append(
      _plot_group_bars(
          {
              'logits magnitude L_i': report['logits_magnitude_groups'],
              'regularized std r_i': report['regularized_std_groups'],
          },
          files.join(outdir, 'logits_magnitude.png'),
          title=title,
      )
  )
  written.append(
      _plot_vs_count(
          {
              'feature norm (test)': {'': report['feature_norm']},
              'feature norm (train)': {'': report['feature_norm_train']},
              'classifier weight norm': {'': report['weight_norm']},
          },
          counts,
          files.join(outdir, 'norms.png'),
          title=title,
      )
  )
  written.append(
      _plot_cosine_heatmap(
          report['class_cosine_matrix'],
          counts,
          files.join(outdir, 'cosine_similarity.png'),
          title=title,
      )
  )
  if report['sharpness'] is not None:
    written.append(
        _plot_sharpness({'': report['sharpness']}, files.join(outdir, 'sharpness.png'), title=title)
    )
  return written


def format_comparison(reports: Mapping[str, dict]) -> str:
  """One row per report: accuracy by group and the scalar diagnostics."""
  columns = [
      (k, h, s) for k, h, s in TABLE_COLUMNS if any(r.get(k) is not None for r in reports.values())
  ]
  width = max(len('run'), *(len(name) for name in reports))
  lines = [' | '.join(['run'.ljust(width)] + [h.rjust(10) for _, h, _ in columns])]
  lines.append('-' * len(lines[0]))
  for name, report in reports.items():
    cells = []
    for key, _, scale in columns:
      value = report.get(key)
      cells.append(
          'n/a'.rjust(10)
          if value is None
          else f'{scale * value:10.2f}'
          if scale != 1
          else f'{value:10.4g}'
      )
    lines.append(' | '.join([name.ljust(width)] + cells))
  return '\n'.join(lines)


def compare_reports(reports: Mapping[str, dict], outdir: str) -> list[str]:
  """``comparison.txt``/``.json`` and overlaid plots of several reports."""
  files.makedirs(outdir)
  table = format_comparison(reports)
  written = [files.join(outdir, 'comparison.txt'), files.join(outdir, 'comparison.json')]
  files.write_text(written[0], table + '\n')
  keys = [k for k, _, _ in TABLE_COLUMNS] + [
      'logits_magnitude_groups',
      'regularized_std_groups',
      'feature_norm_groups',
      'weight_norm_groups',
      'cosine_similarity',
      'sharpness',
  ]
  files.write_json(
      written[1],
      to_jsonable({name: {k: r.get(k) for k in keys} for name, r in reports.items()}),
      indent=1,
  )
  counts = {name: np.asarray(r['train_counts']) for name, r in reports.items()}
  first = next(iter(counts.values()))
  same_counts = all(np.array_equal(c, first) for c in counts.values())
  if same_counts:
    written.append(
        _plot_vs_count(
            {
                'test accuracy (%)': {
                    n: 100 * np.asarray(r['per_class_accuracy'], float) for n, r in reports.items()
                },
                'logits magnitude L_i': {n: r['logits_magnitude'] for n, r in reports.items()},
                'classifier weight norm': {n: r['weight_norm'] for n, r in reports.items()},
            },
            first,
            files.join(outdir, 'per_class_comparison.png'),
        )
    )
  written.append(
      _plot_group_bars(
          {
              f'{what} — {name}': r[f'{key}_groups']
              for key, what in (('logits_magnitude', 'L_i'), ('regularized_std', 'r_i'))
              for name, r in reports.items()
          },
          files.join(outdir, 'logits_magnitude_comparison.png'),
      )
  )
  curves = {n: r['sharpness'] for n, r in reports.items() if r.get('sharpness') is not None}
  if curves:
    written.append(_plot_sharpness(curves, files.join(outdir, 'sharpness_comparison.png')))
  return written


# ------------------------------------------------------------------ plots


def _save(fig, path: str) -> str:
  fig.tight_layout()
  return files.save_figure(fig, path)


def _plot_group_bars(
    panels: Mapping[str, Mapping[str, float]], path: str, *, title: str = ''
) -> str:
  """One bar chart per panel: a value per class group."""
  fig = figure.Figure(figsize=(3.2 * len(panels), 3.2), dpi=120)
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (name, groups) in zip(axes[0], panels.items()):
    values = [np.nan if groups[g] is None else groups[g] for g in GROUPS]
    ax.bar(GROUPS, values, color=['tab:blue', 'tab:orange', 'tab:red'])
    ax.set_title(name, fontsize=9)
    ax.grid(axis='y', alpha=0.3)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def _plot_vs_count(
    panels: Mapping[str, Mapping[str, Sequence[float]]], counts, path: str, *, title: str = ''
) -> str:
  """Per-class values against training count (log x), one series per run."""
  fig = figure.Figure(figsize=(4 * len(panels), 3.4), dpi=120)
  axes = fig.subplots(1, len(panels), squeeze=False)
  order = np.argsort(-np.asarray(counts), kind='stable')
  for ax, (name, series) in zip(axes[0], panels.items()):
    for label, values in series.items():
      values = np.asarray([np.nan if v is None else v for v in values], float)
      ax.plot(np.asarray(counts)[order], values[order], 'o-', ms=3, lw=1, label=label or None)
    ax.set_xscale('log')
    ax.set_xlabel('training samples of the class')
    ax.set_title(name, fontsize=9)
    ax.grid(alpha=0.3)
    if any(series):
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path)


def _plot_cosine_heatmap(matrix, counts, path: str, *, title: str = '') -> str:
  """Class-pair mean cosine similarity, classes ordered from head to tail."""
  order = np.argsort(-np.asarray(counts), kind='stable')
  m = np.asarray(matrix, float)[np.ix_(order, order)]
  fig = figure.Figure(figsize=(4.6, 4), dpi=120)
  ax = fig.subplots()
  image = ax.imshow(m, cmap='viridis', vmin=np.nanmin(m), vmax=np.nanmax(m))
  fig.colorbar(image, ax=ax, fraction=0.046)
  ax.set_xlabel('class (most to least frequent)')
  ax.set_ylabel('class (most to least frequent)')
  ax.set_title(title or 'mean cosine similarity of test features', fontsize=9)
  return _save(fig, path)


def _plot_sharpness(curves: Mapping[str, Mapping], path: str, *, title: str = '') -> str:
  """Training loss against |eps| / |theta| of the classifier, per class group."""
  fig = figure.Figure(figsize=(5, 3.6), dpi=120)
  ax = fig.subplots()
  styles = {'many': '-', 'medium': '--', 'few': ':'}
  colors = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
  for i, (run, curve) in enumerate(curves.items()):
    for group in GROUPS:
      values = [np.nan if v is None else v for v in curve[group]]
      ax.plot(
          curve['relative_radius'],
          values,
          styles[group],
          color=colors[i % len(colors)],
          marker='o',
          ms=3,
          label=f'{run} {group}'.strip(),
      )
  ax.set_xlabel('|eps| / |theta| of the classifier')
  ax.set_ylabel('training cross-entropy')
  ax.set_title(title or 'Sharpness along random directions', fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return _save(fig, path)
