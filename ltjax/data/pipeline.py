"""Deterministic, resumable batching with grain.

The batch of training step s is a pure function of (seed, s): epoch
e = s // steps_per_epoch draws its sample indices from the sampler
(``ltjax.data.samplers``, deterministic in (seed, e)), the batch is slice
s % steps_per_epoch of them (the last partial batch is dropped, as
``drop_last=True`` in the official loaders), and the augmentation randomness is
drawn from ``default_rng([seed, 1, s, process])``.

The input pipeline is a grain ``MapDataset`` over step numbers whose elements
are whole host-local batches: ``MapDataset.range(start, stop).map(batch)``.
Random access by step means the pipeline state *is* the step, which the
checkpointed TrainState already holds, so a resumed run sees exactly the
batches of an uninterrupted one. grain runs it with ``num_threads`` background
threads (1 is right on small CPUs; grain's default 16 slows 2 cores down 4-8x)
or ``num_workers`` processes for JPEG decoding.

Multi-host: every process computes the same global permutation and keeps its
own contiguous slice of each global batch; ``ltjax.train.sharding`` joins the
slices into one global ``jax.Array``.

Augmentation is batch-vectorised numpy (random crop with zero padding, then
horizontal flip, then normalisation), which measured fastest on small CPUs.
"""

from typing import Iterator

from absl import flags
import grain
import numpy as np

from ltjax.data import samplers
from ltjax.data.datasets import ArrayDataset

AUGMENTATIONS = ('none', 'crop_flip', 'flip')


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """uint8 (B, H, W, C) -> float32 (x / 255 - mean) / std."""
  x = images.astype(np.float32) * (1.0 / 255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def random_crop_flip(images: np.ndarray, rng: np.random.Generator, *,
                     padding: int, flip: bool) -> np.ndarray:
  """RandomCrop(H, padding) + RandomHorizontalFlip on a uint8 batch, vectorised."""
  b, h, w, _ = images.shape
  if padding > 0:
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
    dy = rng.integers(0, 2 * padding + 1, b)
    dx = rng.integers(0, 2 * padding + 1, b)
    images = windows[np.arange(b), dy, dx].transpose(0, 2, 3, 1)  # (B, C, H, W) -> NHWC
  if flip:
    flips = rng.random(b) < 0.5
    images = np.where(flips[:, None, None, None], images[:, :, ::-1], images)
  return images


class TrainBatches:
  """Host-local training batches indexed by the global step."""

  def __init__(self, dataset: ArrayDataset, *, global_batch_size: int, seed: int,
               sampler: str = 'instance', augment: str = 'none', crop_padding: int = 4,
               process_index: int = 0, process_count: int = 1):
    if augment not in AUGMENTATIONS:
      raise ValueError(f'Unknown data.augment {augment!r}; valid: {AUGMENTATIONS}.')
    if global_batch_size % process_count:
      raise ValueError(f'Global batch size {global_batch_size} is not divisible by the '
                       f'number of processes {process_count}.')
    if len(dataset) < global_batch_size:
      raise ValueError(f'The training set has {len(dataset)} samples, fewer than one '
                       f'batch of {global_batch_size}; lower config.batch_size.')
    self.dataset = dataset
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.augment = augment
    self.crop_padding = crop_padding
    self.process_index = process_index
    self.sampler = samplers.build_sampler(sampler, dataset.labels, seed=seed,
                                          num_classes=dataset.num_classes)
    self.steps_per_epoch = len(self.sampler) // global_batch_size
    self._cached_epoch = (None, None)

  def epoch_indices(self, epoch: int) -> np.ndarray:
    if self._cached_epoch[0] != epoch:
      self._cached_epoch = (epoch, self.sampler.epoch_indices(epoch))
    return self._cached_epoch[1]

  def indices(self, step: int) -> np.ndarray:
    """Dataset indices of this process's part of the batch of ``step``."""
    epoch, i = divmod(step, self.steps_per_epoch)
    start = i * self.global_batch_size + self.process_index * self.local_batch_size
    return self.epoch_indices(epoch)[start:start + self.local_batch_size]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    idx = self.indices(step)
    images = self.dataset.images[idx]
    if self.augment != 'none':
      rng = np.random.default_rng([self.seed, 1, step, self.process_index])
      padding = self.crop_padding if self.augment == 'crop_flip' else 0
      images = random_crop_flip(images, rng, padding=padding, flip=True)
    return {'image': normalize(images, self.dataset.mean, self.dataset.std),
            'label': self.dataset.labels[idx]}

  def iterate(self, start_step: int, num_steps: int, *, num_threads: int = 1,
              num_workers: int = 0, buffer_size: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """The batches of steps [start_step, start_step + num_steps), computed ahead.

    Args:
      num_threads: grain read threads (0: batches are made in the caller).
      num_workers: grain worker processes (0: none); each makes whole batches.
      buffer_size: batches computed ahead per thread or worker.
    """
    dataset = grain.MapDataset.range(start_step, start_step + num_steps).map(self.batch)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer_size))
    if num_workers > 0:
      if not flags.FLAGS.is_parsed():
        raise RuntimeError(
            'grain worker processes (config.data.num_workers > 0) need absl flags parsed: '
            'run through launch/train.py, or call absl.flags.FLAGS.mark_as_parsed() first '
            '(e.g. in a notebook).')
      iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=num_workers, per_worker_buffer_size=buffer_size))
    return iter(iter_dataset)


def eval_batches(dataset: ArrayDataset, *, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Host-local evaluation batches in file order, padded to a fixed shape.

  Every global batch has ``global_batch_size`` rows so the eval step compiles
  once; padded rows carry ``mask == False``.
  """
  local = global_batch_size // process_count
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
    mask = idx < n
    idx = np.where(mask, idx, 0)
    yield {'image': normalize(dataset.images[idx], dataset.mean, dataset.std),
           'label': dataset.labels[idx], 'mask': mask}
