"""Accuracy metrics for long-tailed recognition on a balanced test set.

accuracy           top-1 over all test samples
per_class          accuracy of each class (recall)
balanced_accuracy  mean of per-class accuracies (equals top-1 on a balanced set)
many/medium/few    mean per-class accuracy over the classes of each group,
                   groups from *training* counts (``class_groups``)

Groups (``config.eval.groups``):
  'threshold'  OLTR's shot split: many n_c > many_threshold, few n_c < few_threshold
               (``ltjax.data.class_groups``; 100 and 20 by default)
  'rank'       classes sorted by training count, largest first: the first
               group_sizes[0] are many, the next group_sizes[1] medium, the rest few.
               Saddle-LongTail (val-iisc, @48328fb) reports its ImageNet-LT and
               iNaturalist 2018 groups this way (imnet_train.py / inat_train.py,
               ``args.*_class_idx``): (390, 445) of 1000 and (842, 3701) of 8142.
               Ties in count are ordered by class index (a stable sort): Saddle's
               own sort (``np.argsort(-counts)``, quicksort) leaves their order to
               numpy, so a tie across a boundary has no reproducible answer there.
"""

from typing import Sequence

import numpy as np

from ltjax.data import longtail

GROUPINGS = ('threshold', 'rank')


def rank_groups(train_counts, group_sizes: Sequence[int]) -> dict[str, np.ndarray]:
  """Many / medium / few masks by rank of training count (``eval.groups='rank'``).

  Classes are ordered by training count, largest first, ties by class index;
  the first ``group_sizes[0]`` are many, the next ``group_sizes[1]`` medium,
  the rest few.
  """
  counts = np.asarray(train_counts)
  sizes = tuple(group_sizes)
  num_classes = len(counts)
  if (
      len(sizes) != 2
      or not all(isinstance(s, (int, np.integer)) and s >= 0 for s in sizes)
      or sum(sizes) > num_classes
  ):
    raise ValueError(
        f'config.eval.group_sizes={sizes} must be two non-negative integers (many, medium) '
        f"summing to at most the {num_classes} classes for eval.groups='rank' "
        '(the rest are few), e.g. (390, 445) for ImageNet-LT.'
    )
  order = np.argsort(-counts, kind='stable')  # Stable: equal counts keep class order.
  rank = np.empty(num_classes, np.int64)
  rank[order] = np.arange(num_classes)
  many, medium = int(sizes[0]), int(sizes[1])
  return {
      'many': rank < many,
      'medium': (rank >= many) & (rank < many + medium),
      'few': rank >= many + medium,
  }


def class_groups(
    train_counts,
    *,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, np.ndarray]:
  """{'many', 'medium', 'few'}: (C,) bool masks from training counts (module docstring)."""
  if groups == 'threshold':
    return longtail.class_groups(
        train_counts, many_threshold=many_threshold, few_threshold=few_threshold
    )
  if groups == 'rank':
    return rank_groups(train_counts, group_sizes)
  raise ValueError(f'Unknown config.eval.groups {groups!r}; valid: {list(GROUPINGS)}.')


def group_options(eval_config) -> dict:
  """``class_groups``' keywords from ``config.eval`` (for every function taking them).

  A config recorded before ``eval.groups`` existed gives the threshold groups.
  """
  return {
      'groups': eval_config.get('groups', 'threshold'),
      'group_sizes': tuple(eval_config.get('group_sizes', ())),
      'many_threshold': eval_config.many_threshold,
      'few_threshold': eval_config.few_threshold,
  }


def per_class_accuracy(predictions, labels, num_classes: int) -> np.ndarray:
  """(C,) accuracy of each class; NaN for a class absent from ``labels``."""
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  totals = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels, weights=predictions == labels, minlength=num_classes)
  return np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)


def balanced_accuracy(predictions, labels, num_classes: int) -> float:
  """Mean of the per-class accuracies of the classes present."""
  return float(np.nanmean(per_class_accuracy(predictions, labels, num_classes)))


def classification_metrics(
    predictions: np.ndarray,
    labels: np.ndarray,
    train_counts: np.ndarray,
    *,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
  """Metrics of predicted vs true labels; a group with no class gives NaN.

  A group's accuracy is the mean of its classes' accuracies (classes absent
  from ``labels`` left out), as OLTR's shot_acc and Saddle's slices compute it.
  """
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  num_classes = len(train_counts)
  per_class = per_class_accuracy(predictions, labels, num_classes)
  present = ~np.isnan(per_class)
  masks = class_groups(
      train_counts,
      groups=groups,
      group_sizes=group_sizes,
      many_threshold=many_threshold,
      few_threshold=few_threshold,
  )
  result = {
      'accuracy': float((predictions == labels).mean()),
      'balanced_accuracy': float(np.nanmean(per_class)),
      'per_class_accuracy': per_class.tolist(),
  }
  for name, members in masks.items():
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


def format_per_class(per_class_accuracy, train_counts, class_names=None, **group_kwargs) -> str:
  """One line per class: name, training count, group and test accuracy.

  ``group_kwargs``: ``class_groups``' keywords (``group_options(config.eval)``).
  """
  groups = class_groups(train_counts, **group_kwargs)
  lines = [f'{"class":>14} | {"train n":>7} | {"group":>6} | {"accuracy":>8}']
  for c, (acc, n) in enumerate(zip(per_class_accuracy, train_counts)):
    name = class_names[c] if class_names is not None else str(c)
    group = next(g for g, members in groups.items() if members[c])
    lines.append(f'{name:>14} | {int(n):7d} | {group:>6} | {100 * acc:8.2f}')
  return '\n'.join(lines)
