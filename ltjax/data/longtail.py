"""Long-tailed subsets of balanced data sets (Cao et al., LDAM-DRW, NeurIPS 2019).

Per-class counts follow the exponential profile
    n_c = floor(n_max * (1/rho) ** (c / (C - 1))),   c = 0 .. C-1,
or the step profile (the first C//2 classes keep n_max, the rest n_max/rho),
where rho = n_max / n_min is the imbalance ratio and class 0 is the head.
The kept samples of each class are either a seeded random subset (the LDAM
lineage, also CC-SAM and DDC) or the first n_c in file order (the
weight-balancing lineage); see docs/references.md, 'Conventions: CIFAR-LT
subsampling'.
"""

import numpy as np

PROFILES = ('exp', 'step')
SELECTIONS = ('shuffle', 'first')


def long_tail_counts(
    num_classes: int, n_max: int, imbalance_ratio: float, profile: str = 'exp'
) -> np.ndarray:
  """Per-class training counts of a long-tailed profile, head class first."""
  if imbalance_ratio <= 1:
    raise ValueError(
        f'imbalance_ratio must be > 1 (n_max / n_min), got {imbalance_ratio}. '
        'To train on the source as it is, set config.data.imbalance_ratio=0.'
    )
  if num_classes < 2:
    raise ValueError(f'num_classes must be >= 2, got {num_classes}.')
  factor = 1.0 / imbalance_ratio
  c = np.arange(num_classes)
  if profile == 'exp':
    counts = [int(n_max * factor ** (i / (num_classes - 1))) for i in c]
  elif profile == 'step':
    counts = [int(n_max) if i < num_classes // 2 else int(n_max * factor) for i in c]
  else:
    raise ValueError(f'Unknown long-tail profile {profile!r}; valid: {PROFILES}.')
  counts = np.asarray(counts, np.int64)
  if counts.min() < 1:
    raise ValueError(
        f'Profile {profile} with n_max={n_max}, imbalance_ratio={imbalance_ratio} '
        f'leaves class {int(np.argmin(counts))} with no samples.'
    )
  return counts


def long_tail_indices(
    labels: np.ndarray, counts: np.ndarray, *, selection: str = 'shuffle', seed: int = 0
) -> np.ndarray:
  """Indices into ``labels`` that keep ``counts[c]`` samples of each class c.

  Args:
    labels: (N,) integer labels of the balanced source.
    counts: (C,) samples to keep per class.
    selection: 'shuffle' (a seeded per-class permutation, numpy's legacy
      RandomState as in the LDAM code) or 'first' (file order).
    seed: the seed of the per-class shuffle.

  Returns:
    Sorted (sum(counts),) int64 indices.
  """
  if selection not in SELECTIONS:
    raise ValueError(f'Unknown selection {selection!r}; valid: {SELECTIONS}.')
  rng = np.random.RandomState(seed)
  kept = []
  for c, n_c in enumerate(counts):
    idx = np.flatnonzero(labels == c)
    if len(idx) < n_c:
      raise ValueError(f'Class {c} has {len(idx)} samples, the profile asks for {n_c}.')
    if selection == 'shuffle':
      rng.shuffle(idx)
    kept.append(idx[:n_c])
  return np.sort(np.concatenate(kept))


def hold_out_indices(
    labels: np.ndarray, per_class: int, *, selection: str = 'shuffle', seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices into (kept, held out) with ``per_class`` held out of every class.

  The held-out samples form a balanced validation split for post-hoc tuning
  (weight balancing holds out 20 per class, leaving n_max = 480 on CIFAR-100).
  With selection 'first' they are the *last* ``per_class`` samples of each class
  in file order, so the first-n convention still picks from the file's start;
  with 'shuffle' they are a seeded random choice.
  """
  if selection not in SELECTIONS:
    raise ValueError(f'Unknown selection {selection!r}; valid: {SELECTIONS}.')
  rng = np.random.RandomState(seed)
  held = []
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    if len(idx) <= per_class:
      raise ValueError(
          f'Class {c} has {len(idx)} samples; holding out {per_class} for '
          'validation would leave none for training.'
      )
    if selection == 'shuffle':
      rng.shuffle(idx)
    held.append(idx[-per_class:])
  held = np.sort(np.concatenate(held))
  return np.setdiff1d(np.arange(len(labels)), held), held


def class_groups(
    train_counts: np.ndarray, *, many_threshold: int = 100, few_threshold: int = 20
) -> dict[str, np.ndarray]:
  """Many/medium/few class masks from *training* counts (OLTR's shot split).

  many: n_c > many_threshold; few: n_c < few_threshold; medium: the rest.
  """
  train_counts = np.asarray(train_counts)
  many = train_counts > many_threshold
  few = train_counts < few_threshold
  return {'many': many, 'medium': ~many & ~few, 'few': few}
