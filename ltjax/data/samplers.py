"""Samplers: which training samples an epoch visits, as a function of (seed, epoch).

  instance      every sample once per epoch, in a random order (the default).
  class_aware   the Decoupling / CC-SAM class-aware sampler (Kang et al., ICLR
                2020; Shen et al., ECCV 2016): cycle through a shuffled list of
                the classes, and at each visit of class c take the next sample of
                c's own shuffled cycle; both cycles reshuffle when exhausted. Every
                class is drawn equally often, head samples rarely and tail samples
                many times per epoch.
  square_root   class c drawn with probability proportional to sqrt(n_c), then a
                uniform sample of c, with replacement (Mahajan et al., 2018). The
                general form ``power`` draws classes with p_c ~ n_c ** q (q = 1 is
                instance-balanced in expectation, q = 0 class-balanced).

Epoch length: every sampler yields N indices per epoch (N = size of the training
set), as the official code's samplers do, so "epoch" means the same number of
steps whatever the sampler.

Difference from the PyTorch samplers: their per-class iterators carry over from
one epoch to the next; here each epoch restarts its cycles from (seed, epoch), so
any epoch can be produced directly (exact resumption). The distribution of what
is drawn is the same.
"""

from typing import Protocol

import numpy as np

SAMPLERS = ('instance', 'class_aware', 'square_root')


class Sampler(Protocol):
  """An epoch's sample indices, deterministic in (seed, epoch)."""

  def epoch_indices(self, epoch: int) -> np.ndarray:
    ...

  def __len__(self) -> int:  # Indices per epoch.
    ...


def _rng(seed: int, epoch: int) -> np.random.Generator:
  return np.random.default_rng([seed, epoch])


class _EpochSampler:
  """N = len(labels) indices per epoch, seeded by (seed, epoch)."""

  def __init__(self, labels: np.ndarray, *, seed: int):
    self.num_samples = len(labels)
    self.seed = seed

  def __len__(self) -> int:
    return self.num_samples


class InstanceSampler(_EpochSampler):
  """Each sample once per epoch, in a random order."""

  def epoch_indices(self, epoch: int) -> np.ndarray:
    return _rng(self.seed, epoch).permutation(self.num_samples)


def _class_members(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
  order = np.argsort(labels, kind='stable')
  bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
  return [order[bounds[c] : bounds[c + 1]] for c in range(num_classes)]


def _cycle(rng: np.random.Generator, items: np.ndarray, length: int) -> np.ndarray:
  """``length`` items from repeated passes over ``items``, each pass reshuffled."""
  passes = -(-length // len(items))
  return np.concatenate([rng.permutation(items) for _ in range(passes)])[:length]


class ClassAwareSampler(_EpochSampler):
  """Decoupling's class-aware sampler: one sample per class visit."""

  def __init__(self, labels: np.ndarray, *, seed: int, num_classes: int | None = None):
    super().__init__(labels, seed=seed)
    labels = np.asarray(labels)
    self.members = _class_members(labels, num_classes or int(labels.max()) + 1)
    self.classes = np.array([c for c, m in enumerate(self.members) if len(m)])

  def epoch_indices(self, epoch: int) -> np.ndarray:
    rng = _rng(self.seed, epoch)
    visits = _cycle(rng, self.classes, self.num_samples)
    indices = np.empty(self.num_samples, np.int64)
    for c in self.classes:
      where = np.flatnonzero(visits == c)
      indices[where] = _cycle(rng, self.members[c], len(where))
    return indices


class PowerSampler(_EpochSampler):
  """Class c with probability ~ n_c ** power, then a uniform member (with replacement)."""

  def __init__(
      self, labels: np.ndarray, *, seed: int, power: float = 0.5, num_classes: int | None = None
  ):
    super().__init__(labels, seed=seed)
    labels = np.asarray(labels)
    self.members = _class_members(labels, num_classes or int(labels.max()) + 1)
    counts = np.array([len(m) for m in self.members], np.float64)
    weights = np.where(counts > 0, counts**power, 0.0)
    self.class_probs = weights / weights.sum()

  def epoch_indices(self, epoch: int) -> np.ndarray:
    rng = _rng(self.seed, epoch)
    classes = rng.choice(len(self.class_probs), self.num_samples, p=self.class_probs)
    indices = np.empty(self.num_samples, np.int64)
    for c in np.unique(classes):
      where = np.flatnonzero(classes == c)
      indices[where] = self.members[c][rng.integers(0, len(self.members[c]), len(where))]
    return indices


def build_sampler(
    name: str, labels: np.ndarray, *, seed: int, num_classes: int | None = None
) -> Sampler:
  """The sampler named by ``config.data.sampler``."""
  if name == 'instance':
    return InstanceSampler(labels, seed=seed)
  if name == 'class_aware':
    return ClassAwareSampler(labels, seed=seed, num_classes=num_classes)
  if name == 'square_root':
    return PowerSampler(labels, seed=seed, power=0.5, num_classes=num_classes)
  raise ValueError(f'Unknown data.sampler {name!r}; valid: {SAMPLERS}.')
