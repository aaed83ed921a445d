"""Diagnostics that explain long-tailed models: logits, features, classifier, landscape.

Pure functions, numpy in and numpy / Python floats / dicts out (JSON-ready via
``.tolist()``). Conventions: features (N, D); labels (N,) ints in [0, C);
logits (N, C); a Flax classifier kernel (D, C) whose column c is class c's
weight vector w_c; bias (C,); train_counts (C,). Groups come from *training*
counts (``ltjax.eval.metrics.class_groups``: by default many n_c > 100, few
n_c < 20, medium the rest; or by rank of count, ``groups='rank'``). A class
absent from the evaluated set gives NaN in per-class outputs and is skipped
(nan-mean) in summaries. The papers and their official code are listed in
docs/references.md.

Logits -- LORT (Lu et al., arXiv:2403.00250, §3.2):
  logits_magnitude     Def. 1, Eq. (4): L_i = E[z_i | y = i] - E[z_i | y != i]
  regularized_std      Def. 2, Eq. (8): r_i = sigma(z_i) / L_i
  group_summary        many / medium / few nan-means of a per-class vector
  decile_summary       Fig. 3's "classes grouped into segments of 10": 10 bins
                       of classes sorted by training count, head first
Features -- EWB (Hasegawa & Sato, ICLR'24, §4) and neural collapse:
  fisher_discriminant_ratio   Tr(S_W^-1 S_B) (§4.2-4.4, Tables 2-4; ref. [7])
  cosine_similarity_stats     mean cosine of same- / different-class pairs (§4.2)
  class_mean_cosine_matrix    Fig. 1 heat map: mean cosine of (a, b) pairs
  feature_norm_per_class      §4.5, Fig. 3
  nc1                         Papyan, Han & Donoho, PNAS 2020: Tr(S_W S_B^+)/C
  etf_distance                the same paper's NC2: class means vs simplex ETF
Classifier:
  weight_norm_per_class       |w_c| (EWB §5.1, Fig. 6; LORT §3.2)
  batchnorm_scale_stats       BN scale (gamma) per layer (EWB §4.3)
  weight_cosine_matrix        cos(w_i, w_j) (LWR, Ha, Park & Choi, §3.2)
  head_tail_angles            angles between class vectors by group pair (LWR Fig. 1)
Landscape -- CC-SAM (Zhou et al., CVPR'23, §2.2.1, Fig. 1):
  sharpness_curve             per-group CE of the linear head perturbed along
                              random directions, vs. |eps| / |theta|

Everything is numpy (float64) except ``sharpness_curve``, whose N x D x C work
per direction runs jitted in JAX. Exact statistics over all sample pairs use
per-class sums of unit vectors, so memory is O(N D), never O(N^2).
"""

import math
import re
from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ltjax.eval.metrics import class_groups

GROUPS = ('many', 'medium', 'few')

# Rows per block of the (rows, D) x (D, D) products (64 MB of float64 at D = 1024).
_BLOCK_ROWS = 8192
# Elements of one (radii, rows, C) logit block in ``sharpness_curve`` (256 MB of f32).
_SHARPNESS_BLOCK_ELEMENTS = 1 << 26


# ----------------------------------------------------------------- helpers


def _matrix(x, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f'{name} must be 2-D, got shape {x.shape}.')
  return x


def _labels(labels, num_classes: Optional[int], rows: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
    raise ValueError(
        'labels must be a 1-D integer array, got shape ' f'{labels.shape} and dtype {labels.dtype}.'
    )
  labels = labels.astype(np.int64)
  if len(labels) != rows:
    raise ValueError(f'labels has {len(labels)} entries, the data has {rows} rows.')
  if labels.size and labels.min() < 0:
    raise ValueError(f'labels must be >= 0, got {labels.min()}.')
  if num_classes is not None and labels.size and labels.max() >= num_classes:
    raise ValueError(f'labels must lie in [0, {num_classes}), got {labels.max()}.')
  return labels


def _nanmean(x) -> float:
  x = np.asarray(x, np.float64)
  x = x[~np.isnan(x)]
  return float(x.mean()) if x.size else float('nan')


def _unit_rows(x: np.ndarray) -> np.ndarray:
  # A zero vector has no direction: it stays 0, i.e. cosine 0 with everything.
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _class_sums(x: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  sums = np.zeros((num_classes, x.shape[1]), np.float64)
  np.add.at(sums, labels, x)
  return sums


def _class_means(features, labels, num_classes):
  """(x, y, counts, means) with NaN means for absent classes."""
  x = _matrix(features, 'features')
  y = _labels(labels, num_classes, len(x))
  counts = np.bincount(y, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    means = _class_sums(x, y, num_classes) / counts[:, None]
  return x, y, counts, means


def _present_means(features, labels, num_classes, minimum: int = 2):
  """Features, labels re-indexed to the K present classes, and their means."""
  x, y, counts, means = _class_means(features, labels, num_classes)
  present = np.flatnonzero(counts)
  if len(present) < minimum:
    raise ValueError(f'Need samples of at least {minimum} classes, got {len(present)}.')
  index = np.full(num_classes, -1)
  index[present] = np.arange(len(present))
  return x, index[y], counts[present], means[present]


def _num_classes(labels) -> int:
  labels = np.asarray(labels)
  return int(labels.max()) + 1 if labels.size else 0


# ------------------------------------------------------------------ logits


def logits_magnitude(logits, labels, num_classes: int, *, normalize: bool = False) -> np.ndarray:
  """LORT Def. 1, Eq. (4): L_i = E[z_Pi] - E[z_Ni] for every class i.

  z_Pi are the class-i logits of the samples of class i (positives), z_Ni the
  class-i logits of all other samples (negatives).

  Args:
    logits: (N, C) logits z.
    labels: (N,) int labels.
    num_classes: C.
    normalize: divide by |L|_1 over the classes with a value -- LORT Fig. 3's
      "magnitude regularization using the 1-norm ... to enhance comparability"
      between methods (our reading of that sentence; off by default).

  Returns:
    (C,) float64; NaN for a class without positives (or without negatives).
  """
  z = _matrix(logits, 'logits')
  if z.shape[1] != num_classes:
    raise ValueError(f'logits has {z.shape[1]} columns, num_classes is {num_classes}.')
  y = _labels(labels, num_classes, len(z))
  n = len(z)
  positives = np.bincount(y, minlength=num_classes)
  negatives = n - positives
  positive_sum = np.bincount(y, weights=z[np.arange(n), y], minlength=num_classes)
  negative_sum = z.sum(axis=0) - positive_sum
  with np.errstate(invalid='ignore', divide='ignore'):
    magnitude = positive_sum / positives - negative_sum / negatives
  magnitude = np.where((positives > 0) & (negatives > 0), magnitude, np.nan)
  if normalize:
    magnitude = magnitude / np.nansum(np.abs(magnitude))
  return magnitude


def regularized_std(logits, labels, num_classes: int, *, over: str = 'all') -> np.ndarray:
  """LORT Def. 2, Eq. (8): r_i = sigma(z_i) / L_i.

  Def. 2 takes "the standard deviation sigma(z)" of the logits z with no
  positive / negative split -- Def. 1 writes z_Pi, z_Ni where it means one --
  so by default sigma(z_i) is the (population) standard deviation of the
  class-i logit over *all* evaluated samples, the spread of the random variable
  z_i that §4.1 perturbs (Delta_i ~ xi r_i L_i = xi sigma(z_i)). Fig. 2 fits a
  normal to positives and negatives separately, so ``over`` also offers the
  standard deviation over the positives or over the negatives of class i.

  Args:
    logits: (N, C) logits.
    labels: (N,) int labels.
    num_classes: C.
    over: 'all' (default), 'positive' or 'negative' samples of class i.

  Returns:
    (C,) float64; NaN where L_i is NaN.
  """
  z = _matrix(logits, 'logits')
  magnitude = logits_magnitude(z, labels, num_classes)
  y = _labels(labels, num_classes, len(z))
  n = len(z)
  own = z[np.arange(n), y]  # z_{y_j} of each sample j, a positive of class y_j
  positives = np.bincount(y, minlength=num_classes)
  if over == 'all':
    sigma = z.std(axis=0)
  elif over == 'positive':
    with np.errstate(invalid='ignore', divide='ignore'):
      mean = np.bincount(y, weights=own, minlength=num_classes) / positives
      sigma = np.sqrt(
          np.bincount(y, weights=(own - mean[y]) ** 2, minlength=num_classes) / positives
      )
  elif over == 'negative':
    negatives = n - positives
    with np.errstate(invalid='ignore', divide='ignore'):
      mean = (z.sum(axis=0) - np.bincount(y, weights=own, minlength=num_classes)) / negatives
      # Two-pass: squared deviations over all rows minus those of the positives.
      squares = ((z - mean) ** 2).sum(axis=0) - np.bincount(
          y, weights=(own - mean[y]) ** 2, minlength=num_classes
      )
      sigma = np.sqrt(np.maximum(squares, 0.0) / negatives)
  else:
    raise ValueError(f"over must be 'all', 'positive' or 'negative', got {over!r}.")
  with np.errstate(invalid='ignore', divide='ignore'):
    return sigma / magnitude


def group_summary(
    values,
    train_counts,
    *,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
  """{'many', 'medium', 'few'}: nan-mean of a per-class vector over each group.

  Groups from training counts (``ltjax.eval.metrics.class_groups``); NaN entries
  (classes absent from the evaluated set) are skipped, and a group with no
  value gives NaN.
  """
  values = np.asarray(values, np.float64)
  counts = np.asarray(train_counts)
  if values.shape != counts.shape or values.ndim != 1:
    raise ValueError(f'values {values.shape} and train_counts {counts.shape} must ' 'both be (C,).')
  masks = class_groups(
      counts,
      groups=groups,
      group_sizes=group_sizes,
      many_threshold=many_threshold,
      few_threshold=few_threshold,
  )
  return {name: _nanmean(values[masks[name]]) for name in GROUPS}


def decile_summary(values, train_counts, *, num_bins: int = 10) -> list:
  """Nan-means of a per-class vector over 10 bins of classes, head first.

  Classes are sorted by training count, largest first (ties keep class order),
  and split into ``num_bins`` nearly equal consecutive bins (``np.array_split``:
  the first C mod num_bins bins hold one class more). Entry 0 is the most
  frequent bin, entry 9 the least frequent -- LORT Fig. 3 "classes are grouped
  into segments of 10" on CIFAR-100. A bin with no value (or no class, when
  C < num_bins) gives NaN.
  """
  values = np.asarray(values, np.float64)
  counts = np.asarray(train_counts)
  if values.shape != counts.shape or values.ndim != 1:
    raise ValueError(f'values {values.shape} and train_counts {counts.shape} must ' 'both be (C,).')
  order = np.argsort(-counts, kind='stable')
  return [_nanmean(values[b]) for b in np.array_split(order, num_bins)]


# ---------------------------------------------------------------- features


def fisher_discriminant_ratio(features, labels) -> float:
  """Fisher's discriminant ratio Tr(S_W^-1 S_B) of the features (EWB §4).

  EWB reports the FDR (Tables 2-4, citing Fisher 1936) without writing it out;
  this is the official code's ``calc_fdr`` (utils/eval_funcs.py of
  HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem; see
  docs/references.md, 'EWB: recipe and official code'), in float64 as there:
    S_B = sum_k N_k (mu_k - mu)(mu_k - mu)^T,  mu the mean of all features,
    S_W = sum_k sum_{i in k} (x_i - mu_k)(x_i - mu_k)^T,
  over the classes present in ``labels``. Like the official code, feature
  dimensions that are constant over all samples (dead ReLU units) are dropped
  first; a still-singular S_W is inverted on its range (pseudo-inverse, the
  eigenvalues above max * D * eps). The ratio is invariant to rescaling of the
  features and to a common 1/N in both matrices.

  Args:
    features: (N, D) features.
    labels: (N,) int labels.

  Returns:
    The FDR (0 when all class means coincide; inf when there is no
    within-class scatter but the means differ).
  """
  x, y, counts, means = _present_means(features, labels, _num_classes(labels))
  spread = x.std(axis=0)
  informative = spread > 1e-12 * max(spread.max(initial=0.0), 1e-300)
  x, means = x[:, informative], means[:, informative]
  scatter = np.zeros((x.shape[1], x.shape[1]))
  for start in range(0, len(x), _BLOCK_ROWS):
    centred = x[start : start + _BLOCK_ROWS] - means[y[start : start + _BLOCK_ROWS]]
    scatter += centred.T @ centred
  between = means - x.mean(axis=0)
  eigenvalues, eigenvectors = np.linalg.eigh(scatter)
  if eigenvalues.size == 0 or eigenvalues.max() <= 0:
    return 0.0 if np.allclose(between, 0) else float('inf')
  keep = eigenvalues > eigenvalues.max() * len(eigenvalues) * np.finfo(np.float64).eps
  # Tr(S_W^-1 S_B) = sum_k N_k m_k^T S_W^-1 m_k, with S_W^-1 = V diag(1/l) V^T.
  projected = between @ eigenvectors[:, keep]
  return float(np.sum(counts[:, None] * projected**2 / eigenvalues[keep]))


def cosine_similarity_stats(features, labels) -> dict:
  """Mean cosine similarity of same-class ('intra') and different-class ('inter') pairs.

  EWB §4.2 (and Fig. 1): "the inter-class and intra-class mean cosine
  similarity of the features". As the official code's
  ``calc_inner_intra_cossim`` (utils/experiments.py), the mean runs over all
  unordered pairs of distinct samples, pair-weighted:
    intra = mean_{i<j, y_i = y_j} cos(x_i, x_j),
    inter = mean_{i<j, y_i != y_j} cos(x_i, x_j).
  (The official code's keys are swapped -- "inner" is same-class, "intra" is
  different-class; here the names follow the paper.) Exact over all pairs
  without forming them: with u_i = x_i / |x_i| and s_c = sum_{i in c} u_i,
    sum_{i != j in c} cos = |s_c|^2 - sum_{i in c} |u_i|^2,
    sum_{y_i != y_j} cos = |sum_c s_c|^2 - sum_c |s_c|^2,
  so memory is O(N D) for any N. A zero feature counts as cosine 0.

  Returns:
    {'intra': float, 'inter': float}; NaN when there is no such pair.
  """
  x = _matrix(features, 'features')
  y = _labels(labels, None, len(x))
  num_classes = _num_classes(y)
  units = _unit_rows(x)
  sums = _class_sums(units, y, num_classes)
  self_terms = np.bincount(y, weights=(units**2).sum(axis=1), minlength=num_classes)
  counts = np.bincount(y, minlength=num_classes).astype(np.float64)
  same = (sums**2).sum(axis=1)
  intra_pairs = np.sum(counts * (counts - 1))
  inter_pairs = len(x) ** 2 - np.sum(counts**2)
  intra = (same.sum() - self_terms.sum()) / intra_pairs if intra_pairs else np.nan
  inter = ((sums.sum(axis=0) ** 2).sum() - same.sum()) / inter_pairs if inter_pairs else np.nan
  return {'intra': float(intra), 'inter': float(inter)}


def class_mean_cosine_matrix(
    features, labels, num_classes: int, *, include_self: bool = False
) -> np.ndarray:
  """EWB Fig. 1: M[a, b] = mean cosine similarity of a class-a and a class-b feature.

  M[a, b] = mean_{i in a, j in b} cos(x_i, x_j) = u_a . u_b, with u_a the mean
  of the unit-normalised class-a features (not the cosine of the class means:
  ``etf_distance`` looks at those). On the diagonal the pairs i = j are left
  out by default, so M[a, a] is class a's intra-class mean as in
  ``cosine_similarity_stats``; the official heat map (``plot_features_cos_sim``)
  keeps them (``include_self=True``), which pulls a class of n samples toward
  1 by 1/n -- a real bias for the few-shot classes.

  Returns:
    (C, C) symmetric float64; NaN rows/columns for absent classes (and a NaN
    diagonal entry for a one-sample class unless include_self).
  """
  x = _matrix(features, 'features')
  y = _labels(labels, num_classes, len(x))
  units = _unit_rows(x)
  sums = _class_sums(units, y, num_classes)
  counts = np.bincount(y, minlength=num_classes).astype(np.float64)
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_units = sums / counts[:, None]
    matrix = mean_units @ mean_units.T
    if not include_self:
      self_terms = np.bincount(y, weights=(units**2).sum(axis=1), minlength=num_classes)
      diagonal = ((sums**2).sum(axis=1) - self_terms) / (counts * (counts - 1))
      np.fill_diagonal(matrix, np.where(counts > 1, diagonal, np.nan))
  return matrix


def feature_norm_per_class(
    features, labels, num_classes: int, *, of_mean: bool = False
) -> np.ndarray:
  """Mean L2 norm of the features of each class (EWB §4.5, Fig. 3).

  EWB's ``plot_features_norms`` averages the per-sample norms, mean_{i in c}
  |x_i| (the default); Fig. 3's caption speaks of "the norm of the mean
  per-class features", |mean_{i in c} x_i| -- ``of_mean=True``.

  Returns:
    (C,) float64; NaN for absent classes.
  """
  x, y, counts, means = _class_means(features, labels, num_classes)
  if of_mean:
    return np.linalg.norm(means, axis=1)
  norms = np.linalg.norm(x, axis=1)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.bincount(y, weights=norms, minlength=num_classes) / counts


def nc1(features, labels, num_classes: int) -> float:
  """Within-class variability collapse NC1 = Tr(S_W S_B^+) / C (Papyan et al. 2020).

  Papyan, Han & Donoho, "Prevalence of neural collapse ...", PNAS 2020, Fig. 6:
    S_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T   (all samples),
    S_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T,
  over the C classes present. On a balanced set mu_G, the global mean, equals
  the mean of the class means; on an imbalanced one we centre S_B on the mean
  of the class means, so S_B describes the geometry of the class means alone
  (as the ETF it is compared with) and not the class frequencies. S_B^+ is the
  pseudo-inverse on the (at most C - 1)-dimensional span of the centred means,
  from their SVD, so no D x D matrix is formed:
    Tr(S_W S_B^+) = (C / N) sum_k |(H - M_y) v_k|^2 / s_k^2.

  Returns:
    NC1 >= 0 (0 for zero within-class variance); NaN when all class means
    coincide (S_B = 0).
  """
  x, y, _, means = _present_means(features, labels, num_classes)
  k = len(means)
  centred = means - means.mean(axis=0)
  _, singular, right = np.linalg.svd(centred, full_matrices=False)
  keep = singular > singular.max() * max(centred.shape) * np.finfo(np.float64).eps
  if not keep.any():  # All class means coincide: S_B = 0, NC1 undefined.
    return float('nan')
  directions = right[keep].T
  projected = np.zeros(directions.shape[1])
  for start in range(0, len(x), _BLOCK_ROWS):
    rows = slice(start, start + _BLOCK_ROWS)
    projected += (((x[rows] - means[y[rows]]) @ directions) ** 2).sum(axis=0)
  trace = k / len(x) * np.sum(projected / singular[keep] ** 2)
  return float(trace / k)


def etf_distance(features, labels, num_classes: int) -> float:
  """NC2: distance of the class means from a simplex ETF (Papyan et al. 2020).

  With M the (K, D) means of the K present classes, centred on their mean
  (the "globally centred" means; see ``nc1`` for why not the sample mean) and
  each scaled to unit norm, G = M M^T is compared with the simplex-ETF Gram
  E = K/(K-1) (I - 1 1^T / K) (diagonal 1, off-diagonal -1/(K-1); EWB App. 7.3
  Eq. (11) with unit class vectors):
    etf_distance = |G - E|_F / |E|_F,   |E|_F = K / sqrt(K - 1),
  the relative Frobenius distance: 0 exactly for a simplex ETF (of any scale,
  rotation or offset), and scale-free, so values compare across data sets.

  Returns:
    The relative distance (>= 0); NaN when a centred class mean is zero.
  """
  _, _, _, means = _present_means(features, labels, num_classes)
  k = len(means)
  centred = means - means.mean(axis=0)
  norms = np.linalg.norm(centred, axis=1, keepdims=True)
  if np.any(norms == 0):
    return float('nan')
  unit = centred / norms
  target = k / (k - 1) * (np.eye(k) - np.full((k, k), 1.0 / k))
  return float(np.linalg.norm(unit @ unit.T - target) / (k / math.sqrt(k - 1)))


# -------------------------------------------------------------- classifier


def _kernel(kernel) -> np.ndarray:
  kernel = np.asarray(kernel, np.float64)
  if kernel.ndim != 2:
    raise ValueError(f'kernel must be (D, C), got shape {kernel.shape}.')
  return kernel


def weight_norm_per_class(kernel) -> np.ndarray:
  """|w_c|: the L2 norm of every class vector (column) of a (D, C) kernel."""
  return np.linalg.norm(_kernel(kernel), axis=0)


def weight_cosine_matrix(kernel) -> np.ndarray:
  """cos(w_i, w_j) of the class vectors, the quantity LWR repels (LWR §3.2, Eq. 3-6).

  Returns:
    (C, C) float64 (a zero column has cosine 0 with everything).
  """
  units = _unit_rows(_kernel(kernel).T)
  return units @ units.T


def head_tail_angles(
    kernel,
    train_counts,
    *,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict:
  """Angles between class vectors, by group pair (LWR §1, Fig. 1; §3.2).

  LWR argues that balanced losses shrink the angle between w_head and w_tail;
  this measures arccos(cos(w_i, w_j)) in degrees for every unordered pair of
  distinct classes, split by the groups of i and j.

  Returns:
    {'many-many', 'many-medium', 'many-few', 'medium-medium', 'medium-few',
     'few-few', 'all'}: each {'mean': degrees, 'min': degrees, 'count': pairs,
    'angles': (pairs,) float64 array of degrees, for histograms}; 'mean' and
    'min' are NaN for a pair type without pairs.
  """
  counts = np.asarray(train_counts)
  kernel = _kernel(kernel)
  if counts.shape != (kernel.shape[1],):
    raise ValueError(
        f'train_counts {counts.shape} must be ({kernel.shape[1]},) ' 'like the kernel columns.'
    )
  angles = np.degrees(np.arccos(np.clip(weight_cosine_matrix(kernel), -1.0, 1.0)))
  masks = class_groups(
      counts,
      groups=groups,
      group_sizes=group_sizes,
      many_threshold=many_threshold,
      few_threshold=few_threshold,
  )
  upper = np.triu(np.ones(angles.shape, bool), k=1)

  def summary(mask):
    values = angles[mask]
    return {
        'mean': _nanmean(values),
        'min': float(values.min()) if values.size else float('nan'),
        'count': int(values.size),
        'angles': values,
    }

  result = {}
  for i, a in enumerate(GROUPS):
    for b in GROUPS[i:]:
      pairs = np.outer(masks[a], masks[b])
      # Within a group: unordered pairs once; across groups every (i, j).
      result[f'{a}-{b}'] = summary(pairs & upper if a == b else pairs)
  result['all'] = summary(upper)
  return result


def _is_batchnorm_name(name: str) -> bool:
  # Flax's default 'BatchNorm_0' and the names in ltjax.models: bn1, stem_bn, ...
  return bool(re.search(r'(?i)batch_?norm|(^|_)bn(\d+|_|$)', name))


def _flatten(tree: Mapping, prefix=()) -> dict:
  flat = {}
  for key, value in tree.items():
    path = prefix + (str(key),)
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path))
    else:
      flat[path] = value
  return flat


def batchnorm_scale_stats(params, *, batch_stats=None) -> dict:
  """Statistics of every BatchNorm scale (gamma) in a Flax params tree (EWB §4.3).

  EWB finds that weight decay shrinks the BN scales ("the mean of the scaling
  parameters from 1.0 to 0.19" on ResNet-34 / CIFAR-100-LT) while the variance
  of the shifts barely changes. A 'scale' leaf belongs to a BatchNorm when its
  module also has running statistics in ``batch_stats`` (if given), otherwise
  when the module's name looks like one ('BatchNorm_0', 'bn1', 'stem_bn', ...;
  LayerNorm / GroupNorm do not match).

  Args:
    params: the 'params' collection, or a variables dict holding 'params' (and
      then 'batch_stats', used unless given).
    batch_stats: optional 'batch_stats' collection identifying BN modules.

  Returns:
    {layer_path: {'mean_abs_scale', 'mean_scale', 'std_scale', 'num'[,
    'var_bias']}} with paths joined by '/', plus 'all' over every BN scale
    together ('num' counts scalars; 'num_layers' the layers). 'var_bias' is
    the variance of the layer's shift when it has one.
  """
  if 'params' in params and isinstance(params['params'], Mapping):
    if batch_stats is None and isinstance(params.get('batch_stats'), Mapping):
      batch_stats = params['batch_stats']
    params = params['params']
  flat = _flatten(params)
  stats_modules = None
  if batch_stats is not None:
    stats_modules = {path[:-1] for path in _flatten(batch_stats)}

  def describe(values):
    values = np.asarray(values, np.float64).ravel()
    return {
        'mean_abs_scale': float(np.abs(values).mean()),
        'mean_scale': float(values.mean()),
        'std_scale': float(values.std()),
        'num': int(values.size),
    }

  result, scales = {}, []
  for path in sorted(flat):
    module = path[:-1]
    if path[-1] != 'scale' or not module:
      continue
    is_bn = module in stats_modules if stats_modules is not None else _is_batchnorm_name(module[-1])
    if not is_bn:
      continue
    values = np.asarray(flat[path], np.float64)
    entry = describe(values)
    if module + ('bias',) in flat:
      entry['var_bias'] = float(np.var(np.asarray(flat[module + ('bias',)], np.float64)))
    result['/'.join(module)] = entry
    scales.append(values.ravel())
  if scales:
    result['all'] = dict(describe(np.concatenate(scales)), num_layers=len(scales))
  else:
    result['all'] = {
        'mean_abs_scale': float('nan'),
        'mean_scale': float('nan'),
        'std_scale': float('nan'),
        'num': 0,
        'num_layers': 0,
    }
  return result


# --------------------------------------------------------------- landscape


@jax.jit
def _perturbed_ce_sums(features, labels, weights, kernel, bias, d_kernel, d_bias, scales):
  """Per-class CE sums at (W + s dW, b + s db) for every s: (S, C).

  features (B, n, D) blocks, labels / weights (B, n); a scan over the blocks
  keeps one (S, n, C) logit block alive. Logits are linear in s, so each block
  costs two matmuls whatever the number of radii.
  """
  num_classes = kernel.shape[1]

  def block(total, inputs):
    x, y, w = inputs
    base = x @ kernel + bias
    delta = x @ d_kernel + d_bias
    logits = base[None] + scales[:, None, None] * delta[None]
    true = jnp.take_along_axis(logits, y[None, :, None], axis=-1)
    # CE = log(1 + sum_{j != y} e^{z_j - z_y}) via log1p: logsumexp(z) - z_y
    # rounds a well-classified sample's small loss to 0 in float32.
    others = jnp.where(jax.nn.one_hot(y, num_classes, dtype=bool)[None], -jnp.inf, logits - true)
    top = jnp.maximum(others.max(axis=-1), 0.0)
    rest = jnp.exp(others - top[..., None]).sum(axis=-1)
    ce = (top + jnp.log1p(jnp.expm1(-top) + rest)) * w[None]
    sums = jax.vmap(lambda c: jax.ops.segment_sum(c, y, num_segments=num_classes))(ce)
    return total + sums, None

  zeros = jnp.zeros((scales.shape[0], num_classes), jnp.float32)
  total, _ = jax.lax.scan(block, zeros, (features, labels, weights))
  return total


def sharpness_curve(
    features,
    labels,
    kernel,
    bias,
    train_counts,
    *,
    relative_radii: Sequence[float] = (0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    num_directions: int = 10,
    seed: int = 0,
    antithetic: bool = True,
    groups: str = 'threshold',
    group_sizes: Sequence[int] = (),
    many_threshold: int = 100,
    few_threshold: int = 20,
    block_rows: Optional[int] = None,
) -> dict:
  """Loss of the perturbed linear classifier vs. |eps| / |theta|, per class group.

  CC-SAM §2.2.1, Fig. 1: "perturbing the parameter theta of the classifier h
  with increasing noise eps", loss against the noise norm ratio
  |eps|_2 / |theta|_2 (their App. E splits head and tail classes). Here
  theta = (W, b) flattened together, and for radius r and direction d,
    eps = r |theta| d,  d ~ N(0, I) over all D C + C entries, scaled to |d| = 1
  -- one global scale, no filter (per-class) normalisation. The same
  directions serve every radius. With ``antithetic`` (default) directions come
  in pairs d, -d: this cancels the first-order term of the loss, leaving the
  curvature that sharpness is about, and makes every curve exactly
  non-decreasing in r (the pair mean of a convex function of r is even and
  convex); an odd ``num_directions`` leaves the last direction unpaired.

  Per class c the loss is the mean cross-entropy of its evaluated samples,
  averaged over directions; a group's value is the mean over its classes
  present (class-balanced, like ``group_summary``), 'all' over all classes
  present. Runs jitted in float32, in blocks of rows.

  Args:
    features: (N, D) features of the evaluated set.
    labels: (N,) int labels.
    kernel: (D, C) classifier kernel.
    bias: (C,) bias, or None for a bias-free head (theta is then W alone).
    train_counts: (C,) training counts, for the groups.
    relative_radii: the ratios r = |eps| / |theta|.
    num_directions: random directions averaged per radius.
    seed: seed of the directions (``jax.random.key``).
    antithetic: use the directions in +/- pairs.
    groups, group_sizes, many_threshold, few_threshold: the class groups
      (``ltjax.eval.metrics.class_groups``).
    block_rows: rows per block (default: ~2^26 logits per block).

  Returns:
    {'relative_radius': [...], 'many': [...], 'medium': [...], 'few': [...],
     'all': [...]}: lists of floats, one per radius (NaN for an empty group).
  """
  x = np.asarray(features, np.float32)
  if x.ndim != 2:
    raise ValueError(f'features must be (N, D), got shape {x.shape}.')
  w = np.asarray(kernel, np.float32)
  if w.ndim != 2 or w.shape[0] != x.shape[1]:
    raise ValueError(f'kernel must be (D, C) = ({x.shape[1]}, C), got {w.shape}.')
  num_classes = w.shape[1]
  b = np.zeros(num_classes, np.float32) if bias is None else np.asarray(bias, np.float32)
  if b.shape != (num_classes,):
    raise ValueError(f'bias must be ({num_classes},), got {b.shape}.')
  counts_train = np.asarray(train_counts)
  if counts_train.shape != (num_classes,):
    raise ValueError(f'train_counts must be ({num_classes},), got {counts_train.shape}.')
  y = _labels(labels, num_classes, len(x))
  if num_directions < 1:
    raise ValueError(f'num_directions must be >= 1, got {num_directions}.')
  radii = np.asarray(relative_radii, np.float64)
  theta_norm = math.sqrt(
      float(np.sum(w.astype(np.float64) ** 2))
      + (0.0 if bias is None else float(np.sum(b.astype(np.float64) ** 2)))
  )
  scales = radii * theta_norm

  n = len(x)
  rows = block_rows or max(1, min(n, _SHARPNESS_BLOCK_ELEMENTS // (len(radii) * num_classes)))
  blocks = -(-n // rows)
  pad = blocks * rows - n
  # Padding rows carry weight 0, so every block has one shape (one compile).
  xs = jnp.asarray(np.pad(x, ((0, pad), (0, 0))).reshape(blocks, rows, -1))
  ys = jnp.asarray(np.pad(y, (0, pad)).astype(np.int32).reshape(blocks, rows))
  ws = jnp.asarray(np.pad(np.ones(n, np.float32), (0, pad)).reshape(blocks, rows))
  w_dev, b_dev = jnp.asarray(w), jnp.asarray(b)

  key = jax.random.key(seed)
  sums = np.zeros((len(radii), num_classes))
  for k in range(num_directions):
    base, sign = (k // 2, -1.0 if k % 2 else 1.0) if antithetic else (k, 1.0)
    key_w, key_b = jax.random.split(jax.random.fold_in(key, base))
    d_kernel = jax.random.normal(key_w, w.shape, jnp.float32)
    d_bias = (
        jax.random.normal(key_b, b.shape, jnp.float32)
        if bias is not None
        else jnp.zeros_like(b_dev)
    )
    norm = jnp.sqrt(jnp.sum(d_kernel**2) + jnp.sum(d_bias**2))
    signed = jnp.asarray(sign * scales, jnp.float32)
    sums += np.asarray(
        _perturbed_ce_sums(xs, ys, ws, w_dev, b_dev, d_kernel / norm, d_bias / norm, signed),
        np.float64,
    )

  present = np.bincount(y, minlength=num_classes)
  with np.errstate(invalid='ignore', divide='ignore'):
    per_class = np.where(present > 0, sums / num_directions / present, np.nan)
  result = {'relative_radius': radii.tolist()}
  group_kwargs = dict(
      groups=groups,
      group_sizes=group_sizes,
      many_threshold=many_threshold,
      few_threshold=few_threshold,
  )
  summaries = [group_summary(row, counts_train, **group_kwargs) for row in per_class]
  for name in GROUPS:
    result[name] = [s[name] for s in summaries]
  result['all'] = [_nanmean(row) for row in per_class]
  return result
