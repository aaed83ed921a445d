"""Post-hoc logit adjustment and its validation searches.

Pure numpy functions of logits (or features and a linear classifier) and the
training class counts n_c, with prior pi_c = n_c / sum_c n_c:

  additive_adjust        z_c - tau log pi_c
      Menon et al., ICLR'21 (post-hoc LA); EWB (Hasegawa & Sato, ICLR'24)
      App. 7.3 Eq. (10); LORT
      Table 1 "Post-hoc Logit Adjustment" (written there with log n_c, which
      differs by a per-sample constant and gives the same predictions).
  multiplicative_adjust  z_c * pi_c^-gamma
      Hasegawa & Sato's official code (docs/references.md, 'EWB: recipe and
      official code'): the logits of the fixed
      ETF classifier times exp(-gamma log pi_c) (gamma = 0.65 on CIFAR-100-LT,
      1.6 on CIFAR-10-LT, both IR 100).
  weight_norm_adjust     z_c * |w_c|^-tau
      the per-class weight-norm rescaling: tau-normalisation (Kang et al.) of a
      linear head without bias, acting on logits. With tau = 1 it is the
      "normalise the norm post-hoc" step of EWB Eq. (9),
      w'_k = w_k / (pi_k^gamma |w_k|); ``normalized_multiplicative_adjust`` is
      the whole of Eq. (9).

The searches pick the value that maximises balanced accuracy (mean per-class
recall) on a validation split, scanning a grid given as an argument, and return
it with the curve {value: balanced accuracy}. Ties go to the smaller
adjustment (smaller |value|, then the smaller value), so a flat curve returns
the least intrusive setting.
"""

from typing import Callable, Sequence

import numpy as np

from ltjax.models.heads import tau_norm_scale

# tau / gamma in 0, 0.05, ..., 2 (41 values): covers the published optima
# (multiplicative 0.65 and 1.6, weight-balancing tau-norm 1.9, additive 1).
DEFAULT_GRID = tuple(float(v) for v in np.round(np.linspace(0.0, 2.0, 41), 6))

# Two balanced accuracies closer than this are a tie (float round-off only:
# real differences are at least 1 / (C * max class size)).
_TIE_TOL = 1e-12


def log_prior(class_counts) -> np.ndarray:
  """log pi_c = log(n_c / sum n), float64, shape (C,); counts must be > 0."""
  counts = np.asarray(class_counts, np.float64)
  if counts.ndim != 1 or np.any(counts <= 0):
    raise ValueError(
        'class_counts must be a 1-D array of positive training ' f'counts, got {class_counts!r}.'
    )
  return np.log(counts) - np.log(counts.sum())


def _float_logits(logits) -> np.ndarray:
  logits = np.asarray(logits)
  return logits.astype(np.result_type(logits.dtype, np.float32))


def additive_adjust(logits, class_counts, tau: float) -> np.ndarray:
  """Additive (post-hoc) logit adjustment z_c - tau log pi_c.

  Args:
    logits: (..., C) logits z.
    class_counts: (C,) training counts n_c.
    tau: the temperature (0 = no adjustment, 1 = Bayes-optimal for balanced
      error under a calibrated z).

  Returns:
    (..., C) adjusted logits, float32 (or float64 for float64 input).
  """
  logits = _float_logits(logits)
  return logits - (tau * log_prior(class_counts)).astype(logits.dtype)


def multiplicative_adjust(logits, class_counts, gamma: float) -> np.ndarray:
  """Multiplicative logit adjustment z_c * pi_c^-gamma (Hasegawa & Sato).

  As the official code: the logits (bias included) are multiplied, so a
  negative logit of a tail class becomes more negative. With equal class-vector
  norms and no bias (the fixed ETF classifier) it equals EWB Eq. (9).

  Args:
    logits: (..., C) logits z.
    class_counts: (C,) training counts n_c.
    gamma: the exponent (0 = no adjustment).

  Returns:
    (..., C) adjusted logits.
  """
  logits = _float_logits(logits)
  return logits * np.exp(-gamma * log_prior(class_counts)).astype(logits.dtype)


def weight_norm_adjust(logits, kernel, tau: float) -> np.ndarray:
  """Scales each class logit by |w_c|^-tau, w_c = column c of the (d, C) kernel.

  For bias-free logits z = f.W this is exactly the tau-normalised classifier,
  f.tau_normalize(W, tau) (``ltjax.models.heads``); with a bias it also scales
  the bias (use ``search_tau_norm`` for the bias-preserving tau-norm).

  Args:
    logits: (..., C) logits.
    kernel: (d, C) classifier kernel.
    tau: the exponent (0 = identity, 1 = cosine-like unit-norm classes).

  Returns:
    (..., C) adjusted logits.
  """
  logits = _float_logits(logits)
  return logits * np.asarray(tau_norm_scale(kernel, tau), logits.dtype)


def tau_norm_adjust(logits, kernel, bias, tau: float) -> np.ndarray:
  """The logits of the tau-normalised classifier, from the plain classifier's logits.

  z_c = f . w_c + b_c becomes (z_c - b_c) |w_c|^-tau + b_c = f . w_c / |w_c|^tau + b_c,
  ``TauNormHead``'s logits (Kang et al., ICLR 2020): the bias is kept, as the
  weight-balancing code does.

  Args:
    logits: (..., C) logits of the affine head.
    kernel: (d, C) its kernel; bias: (C,) its bias, or None.
    tau: the exponent.
  """
  logits = _float_logits(logits)
  offset = (
      np.zeros(logits.shape[-1], logits.dtype) if bias is None else np.asarray(bias, logits.dtype)
  )
  return (logits - offset) * np.asarray(tau_norm_scale(kernel, tau), logits.dtype) + offset


def normalized_multiplicative_adjust(logits, kernel, class_counts, gamma: float) -> np.ndarray:
  """EWB Eq. (9): class vectors normalised, then scaled by pi_c^-gamma.

  w'_k = w_k / (pi_k^gamma |w_k|), applied to the logits:
  z'_k = z_k pi_k^-gamma / |w_k| (bias-free logits; a bias is scaled alike).
  """
  return multiplicative_adjust(weight_norm_adjust(logits, kernel, 1.0), class_counts, gamma)


def balanced_accuracy(predictions, labels, num_classes: int) -> float:
  """Mean per-class recall over the classes present in ``labels``."""
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  totals = np.bincount(labels, minlength=num_classes)
  hits = np.bincount(labels, weights=predictions == labels, minlength=num_classes)
  present = totals > 0
  return float(np.mean(hits[present] / totals[present]))


def search_grid(
    adjusted_logits: Callable[[float], np.ndarray],
    labels,
    values: Sequence[float],
    num_classes: int,
) -> tuple[float, dict]:
  """Scans ``values``; returns (best value, {value: balanced accuracy}).

  ``adjusted_logits(value)`` gives the (N, C) logits adjusted by ``value``; ties go to the
  least intrusive value (module docstring).
  """
  values = [float(v) for v in values]
  if not values:
    raise ValueError('The search grid is empty.')
  labels = np.asarray(labels)
  curve = {}
  for value in values:
    predictions = np.argmax(adjusted_logits(value), axis=-1)
    curve[value] = balanced_accuracy(predictions, labels, num_classes)
  top = max(curve.values())
  # Among the (near-)maxima, the smallest adjustment wins.
  best = min((v for v in curve if curve[v] >= top - _TIE_TOL), key=lambda v: (abs(v), v))
  return best, curve


def search_additive(
    val_logits, val_labels, class_counts, taus: Sequence[float] = DEFAULT_GRID
) -> tuple[float, dict]:
  """The tau of ``additive_adjust`` maximising validation balanced accuracy.

  Args:
    val_logits: (N, C) validation logits.
    val_labels: (N,) int labels.
    class_counts: (C,) training counts.
    taus: the grid (default 0, 0.05, ..., 2).

  Returns:
    (tau, curve): the chosen tau and {tau: balanced accuracy} over the grid.
  """
  logits = _float_logits(val_logits)
  return search_grid(
      lambda t: additive_adjust(logits, class_counts, t), val_labels, taus, logits.shape[-1]
  )


def search_multiplicative(
    val_logits, val_labels, class_counts, gammas: Sequence[float] = DEFAULT_GRID
) -> tuple[float, dict]:
  """The gamma of ``multiplicative_adjust`` maximising validation balanced accuracy.

  Args:
    val_logits: (N, C) validation logits.
    val_labels: (N,) int labels.
    class_counts: (C,) training counts.
    gammas: the grid (default 0, 0.05, ..., 2).

  Returns:
    (gamma, curve): the chosen gamma and {gamma: balanced accuracy}.
  """
  logits = _float_logits(val_logits)
  return search_grid(
      lambda g: multiplicative_adjust(logits, class_counts, g), val_labels, gammas, logits.shape[-1]
  )


def search_tau_norm(
    features, labels, kernel, bias=None, taus: Sequence[float] = DEFAULT_GRID
) -> tuple[float, dict]:
  """The tau of tau-normalisation maximising validation balanced accuracy.

  Logits are those of ``TauNormHead(tau)``: f . tau_normalize(W, tau) + b,
  computed as (f . w_c) |w_c|^-tau + b_c so the (N, d) x (d, C) product is
  done once for the whole grid.

  Args:
    features: (N, d) validation features.
    labels: (N,) int labels.
    kernel: (d, C) trained classifier kernel.
    bias: (C,) bias, or None.
    taus: the grid (default 0, 0.05, ..., 2).

  Returns:
    (tau, curve): the chosen tau and {tau: balanced accuracy}.
  """
  kernel = np.asarray(kernel, np.float32)
  logits = np.asarray(features, np.float32) @ kernel
  if bias is not None:
    logits = logits + np.asarray(bias, np.float32)
  return search_grid(
      lambda tau: tau_norm_adjust(logits, kernel, bias, tau), labels, taus, kernel.shape[-1]
  )
