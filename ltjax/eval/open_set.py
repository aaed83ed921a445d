"""Open-set long-tailed recognition: prototype scores and OLTR's F-measure.

CC-SAM (Zhou et al., CVPR 2023) §4.3, Table 4:
"Following the setting of OLTR [32], we enable CC-SAM to distinguish the
close-set and open-set samples by applying a simple, non-learnable
prototype-based metric", reporting many/medium/few closed-set accuracy and an
F-measure. The paper gives neither the metric's formula nor the threshold, so
both follow OLTR (Liu et al., "Large-scale long-tailed recognition in an open
world", CVPR 2019; code zhmiao/OpenLongTailRecognition-OLTR):

  scores      prototypes = class means of the *training* features (OLTR's
              centroids); ``prototype_scores`` gives the max cosine similarity
              to the unit-normalised prototypes (default) or OLTR's
              reachability 1 / min_c |f - c_c| (Eq. 2 of OLTR).
  rejection   a test sample is predicted "open" when its score < threshold
              (OLTR ``run_networks.eval``: preds[probs < open_threshold] = -1,
              threshold 0.1 on the max softmax probability in every config).
  F-measure   OLTR ``utils.F_measure(openset=True)``, counts over all test
              samples with the open ones labelled -1:
                TP = known samples accepted with their true class,
                FP = known samples that are not TP (wrong class *or* rejected),
                FN = open samples accepted as some known class,
                F  = 2 P R / (P + R),  P = TP / (TP + FP),  R = TP / (TP + FN).
              (OLTR adds 1e-12 to P + R; we return 0 when P + R = 0 instead, so
              perfect separation gives exactly 1.)

Protocol variants (``protocol=``): 'oltr' above (default); 'decouple', the
F_measure of the Decoupling code (facebookresearch/classifier-balancing), whose
FP leaves out the rejected known samples; 'macro', the macro F1 over the known
classes plus the open class as one more class (sklearn's ``average='macro'``
over the classes present in truth or prediction) -- a common reading of
"F-measure" that is not OLTR's code.

The threshold: CC-SAM does not say; OLTR's 0.1 applies to softmax
probabilities only (``OLTR_SOFTMAX_THRESHOLD`` with ``softmax_scores``). For
cosine prototype scores there is no published value: ``select_threshold``
scans a grid and returns the best F with its curve -- choose it on a validation
split that has open samples; on the test split it is an oracle upper bound.
"""

from typing import Optional, Sequence

import numpy as np

PROTOCOLS = ('oltr', 'decouple', 'macro')
METRICS = ('cosine', 'reachability')

# OLTR's training_opt['open_threshold'] (config/*/stage_2_meta_embedding.py),
# on the max softmax probability.
OLTR_SOFTMAX_THRESHOLD = 0.1

_BLOCK_ROWS = 4096


def prototype_scores(
    train_features, train_labels, test_features, num_classes: int, *, metric: str = 'cosine'
) -> tuple[np.ndarray, np.ndarray]:
  """Prototype-based open-set scores (higher = more likely a known class).

  Prototypes c_k are the mean training features of each class k present in
  ``train_labels`` (absent classes are never predicted).

  metric 'cosine' (default): score = max_k cos(f, c_k), prediction its argmax
    -- the "simple, non-learnable prototype-based metric" of CC-SAM §4.3.
  metric 'reachability': OLTR's gamma = 1 / min_k |f - c_k|_2 on the raw
    features (inf on a prototype), prediction the nearest prototype.

  Args:
    train_features: (N_train, D) training features.
    train_labels: (N_train,) int labels in [0, num_classes).
    test_features: (N, D) features to score.
    num_classes: C.
    metric: 'cosine' or 'reachability'.

  Returns:
    (scores (N,) float64, predictions (N,) int64).
  """
  if metric not in METRICS:
    raise ValueError(f'metric must be one of {METRICS}, got {metric!r}.')
  train = np.asarray(train_features, np.float64)
  test = np.asarray(test_features, np.float64)
  labels = np.asarray(train_labels)
  if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
    raise ValueError(
        f'train_features {train.shape} and test_features {test.shape} '
        'must be (N, D) with the same D.'
    )
  if labels.shape != (len(train),) or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(
        f'train_labels must be ({len(train)},) ints, got {labels.shape} ' f'{labels.dtype}.'
    )
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f'train_labels must lie in [0, {num_classes}).')
  counts = np.bincount(labels, minlength=num_classes)
  present = np.flatnonzero(counts)
  if not present.size:
    raise ValueError('No training features: there is no prototype.')
  sums = np.zeros((num_classes, train.shape[1]))
  np.add.at(sums, labels, train)
  prototypes = sums[present] / counts[present, None]
  if metric == 'cosine':
    prototypes = _unit_rows(prototypes)
  scores = np.empty(len(test))
  nearest = np.empty(len(test), np.int64)
  for start in range(0, len(test), _BLOCK_ROWS):
    block = test[start : start + _BLOCK_ROWS]
    if metric == 'cosine':
      similarity = _unit_rows(block) @ prototypes.T
      best = similarity.argmax(axis=1)
      scores[start : start + len(block)] = similarity[np.arange(len(block)), best]
    else:
      squared = (
          (block**2).sum(axis=1, keepdims=True)
          - 2 * block @ prototypes.T
          + (prototypes**2).sum(axis=1)
      )
      best = squared.argmin(axis=1)
      distance = np.sqrt(np.maximum(squared[np.arange(len(block)), best], 0.0))
      with np.errstate(divide='ignore'):
        scores[start : start + len(block)] = 1.0 / distance
    nearest[start : start + len(block)] = present[best]
  return scores, nearest


def softmax_scores(logits) -> tuple[np.ndarray, np.ndarray]:
  """OLTR's own score: (max softmax probability, argmax) of (N, C) logits."""
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=1, keepdims=True)
  probs = np.exp(z)
  probs /= probs.sum(axis=1, keepdims=True)
  return probs.max(axis=1), probs.argmax(axis=1)


def _unit_rows(x):
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _inputs(predictions, labels, scores, is_open):
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  scores = np.asarray(scores, np.float64)
  is_open = np.asarray(is_open, bool)
  n = len(predictions)
  for name, value in (('labels', labels), ('scores', scores), ('is_open', is_open)):
    if value.shape != (n,):
      raise ValueError(f'{name} must have shape ({n},) like predictions, got {value.shape}.')
  return predictions.astype(np.int64), labels.astype(np.int64), scores, is_open


def _f_from_counts(tp, fp, fn):
  tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
  with np.errstate(invalid='ignore', divide='ignore'):
    precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
    return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)


def _macro_f(final, truth, open_class):
  classes = np.union1d(truth, final)
  size = open_class + 1
  tp = np.bincount(truth[final == truth], minlength=size)
  predicted = np.bincount(final, minlength=size)
  actual = np.bincount(truth, minlength=size)
  f = _f_from_counts(tp[classes], predicted[classes] - tp[classes], actual[classes] - tp[classes])
  return float(f.mean())


def open_set_f_measure(
    predictions, labels, scores, *, is_open, threshold: float, protocol: str = 'oltr'
) -> float:
  """The open-set F-measure of OLTR (CC-SAM §4.3, Table 4).

  A sample is accepted as known when score >= threshold (OLTR rejects
  score < threshold) and then predicted ``predictions[i]``; otherwise it is
  predicted "open". With 'oltr' (see the module docstring):
    TP = #{known, accepted, prediction == label}, FP = #known - TP,
    FN = #{open, accepted},  F = 2PR / (P + R).

  Args:
    predictions: (N,) closed-set class predictions (the classifier's argmax, as
      in CC-SAM Table 4 whose many/medium/few equal the closed-set accuracies;
      or ``prototype_scores``' nearest prototype).
    labels: (N,) true classes of the known samples (ignored where is_open).
    scores: (N,) known-ness scores (higher = more likely known).
    is_open: (N,) bool, True for samples of no training class.
    threshold: reject as open when score < threshold.
    protocol: 'oltr' (default), 'decouple' or 'macro'.

  Returns:
    The F-measure in [0, 1].
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {PROTOCOLS}, got {protocol!r}.')
  predictions, labels, scores, is_open = _inputs(predictions, labels, scores, is_open)
  accepted = scores >= threshold
  known = ~is_open
  if protocol == 'macro':
    known_labels = labels[known]
    open_class = int(max(predictions.max(initial=-1), known_labels.max(initial=-1))) + 1
    final = np.where(accepted, predictions, open_class)
    truth = np.where(is_open, open_class, labels)
    return _macro_f(final, truth, open_class)
  tp = np.sum(known & accepted & (predictions == labels))
  fp = (
      known.sum() - tp if protocol == 'oltr' else np.sum(known & accepted & (predictions != labels))
  )
  fn = np.sum(is_open & accepted)
  return float(_f_from_counts(tp, fp, fn))


def f_measure_curve(
    predictions,
    labels,
    scores,
    *,
    is_open,
    thresholds: Optional[Sequence[float]] = None,
    protocol: str = 'oltr',
) -> tuple[np.ndarray, np.ndarray]:
  """``open_set_f_measure`` at every threshold of a grid.

  Args:
    predictions, labels, scores, is_open, protocol: as ``open_set_f_measure``.
    thresholds: the grid; default the 0, 1, ..., 100th percentiles of the
      scores (deduplicated), from accept-all to nearly reject-all.

  Returns:
    (thresholds (T,), F-measures (T,)), both float64.
  """
  predictions, labels, scores, is_open = _inputs(predictions, labels, scores, is_open)
  finite = scores[np.isfinite(scores)]
  if thresholds is None:
    thresholds = np.unique(np.percentile(finite, np.arange(101))) if finite.size else [0.0]
  thresholds = np.asarray(thresholds, np.float64)
  if protocol == 'macro':
    values = [
        open_set_f_measure(
            predictions, labels, scores, is_open=is_open, threshold=t, protocol='macro'
        )
        for t in thresholds
    ]
    return thresholds, np.asarray(values, np.float64)
  if protocol not in PROTOCOLS:
    raise ValueError(f'protocol must be one of {PROTOCOLS}, got {protocol!r}.')

  # Counts of scores >= t for every t at once, from sorted scores.
  def at_least(values):
    ordered = np.sort(values)
    return len(ordered) - np.searchsorted(ordered, thresholds, side='left')

  known = ~is_open
  correct = known & (predictions == labels)
  tp = at_least(scores[correct])
  fp = known.sum() - tp if protocol == 'oltr' else at_least(scores[known & ~correct])
  fn = at_least(scores[is_open])
  return thresholds, _f_from_counts(tp, fp, fn)


def select_threshold(
    predictions,
    labels,
    scores,
    *,
    is_open,
    thresholds: Optional[Sequence[float]] = None,
    protocol: str = 'oltr',
) -> tuple[float, float, dict]:
  """The threshold of the grid maximising the F-measure (ties: the smallest).

  Use a validation split with open samples; selecting on the test split gives
  an oracle upper bound, not a result.

  Returns:
    (threshold, F-measure at it, {threshold: F-measure} over the grid).
  """
  grid, values = f_measure_curve(
      predictions, labels, scores, is_open=is_open, thresholds=thresholds, protocol=protocol
  )
  if not grid.size:
    raise ValueError('The threshold grid is empty.')
  order = np.argsort(grid, kind='stable')
  grid, values = grid[order], values[order]
  best = int(np.argmax(values))  # the first maximum: the smallest threshold
  return float(grid[best]), float(values[best]), dict(zip(grid.tolist(), values.tolist()))
