"""Accuracy metrics for long-tailed recognition on a balanced test set.

accuracy           top-1 over all test samples
per_class          accuracy of each class (recall)
balanced_accuracy  mean of per-class accuracies (equals top-1 on a balanced set)
many/medium/few    mean per-class accuracy over the classes of each group,
                   groups from *training* counts (ltjax.data.class_groups)
"""

import numpy as np

from ltjax.data.longtail import class_groups


def classification_metrics(
    predictions: np.ndarray,
    labels: np.ndarray,
    train_counts: np.ndarray,
    *,
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
  """Metrics of predicted vs true labels; a group with no class gives NaN."""
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  num_classes = len(train_counts)
  correct = predictions == labels
  totals = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels, weights=correct, minlength=num_classes)
  present = totals > 0
  per_class = np.where(present, hits / np.maximum(totals, 1), np.nan)
  groups = class_groups(train_counts, many_threshold=many_threshold, few_threshold=few_threshold)
  result = {
      'accuracy': float(correct.mean()),
      'balanced_accuracy': float(np.nanmean(per_class)),
      'per_class_accuracy': per_class.tolist(),
  }
  for name, members in groups.items():
    members = members & present
    result[name] = float(per_class[members].mean()) if members.any() else float('nan')
  return result


def format_table(metrics: dict, *, title: str = '') -> str:
  """A small text table of the headline metrics, in percent."""
  keys = ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few')
  header = ' | '.join(f'{k:>17}' for k in keys)
  values = ' | '.join(f'{100 * metrics[k]:17.2f}' for k in keys)
  rule = '-' * len(header)
  lines = [title] if title else []
  return '\n'.join(lines + [header, rule, values])


def format_per_class(per_class_accuracy, train_counts, class_names=None) -> str:
  """One line per class: name, training count, group and test accuracy."""
  groups = class_groups(train_counts)
  lines = [f'{"class":>14} | {"train n":>7} | {"group":>6} | {"accuracy":>8}']
  for c, (acc, n) in enumerate(zip(per_class_accuracy, train_counts)):
    name = class_names[c] if class_names is not None else str(c)
    group = next(g for g, members in groups.items() if members[c])
    lines.append(f'{name:>14} | {int(n):7d} | {group:>6} | {100 * acc:8.2f}')
  return '\n'.join(lines)
