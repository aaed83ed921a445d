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

Augmentation (``AUGMENTATIONS``; the ops are in ``ltjax.data.augment``) is
batch-vectorised numpy where the images share a size, which measured fastest
on small CPUs; variable-size sources (list-file JPEGs) are decoded and
random-resized-cropped image by image first. Mixup, when on, is the last op.
"""

import functools
from typing import Iterator

from absl import flags
import grain
import numpy as np

from ltjax.data import augment
from ltjax.data import samplers
from ltjax.data.datasets import ArrayDataset

# data.augment -> what a training batch goes through (after the per-sample
# decode; every pipeline ends with normalisation):
AUGMENTATIONS = (
    'none',         # nothing
    'flip',         # horizontal flip
    'crop_flip',    # RandomCrop(H, crop_padding) + flip (CIFAR standard)
    'autoaugment',  # crop_flip + AutoAugment CIFAR-10 policy + Cutout(16) (DDC's "RandAug")
    'imagenet',     # RandomResizedCrop(image_size) + flip + ColorJitter(0.4, 0.4, 0.4)
    'inat',         # RandomResizedCrop(image_size) + flip
)
_RESIZED_CROP = ('imagenet', 'inat')


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
    images = np.array(images)  # Copy only the flipped images' pixels below.
    images[flips] = images[flips, :, ::-1]
  return images


def load_images(dataset, indices: np.ndarray, transform=None
                ) -> tuple[np.ndarray, np.ndarray]:
  """(images (B, H, W, C) uint8, labels (B,)) of ``indices``.

  In-memory sources are sliced at once; others are read record by record
  (decoding JPEGs here, i.e. in the input workers), each image passed through
  ``transform`` (e.g. a random resized crop), which must give a common size.
  """
  if isinstance(dataset, ArrayDataset) and transform is None:
    return dataset.images[indices], dataset.labels[indices]
  records = [dataset[int(i)] for i in indices]
  images = [r['image'] if transform is None else transform(r['image']) for r in records]
  shapes = {x.shape for x in images}
  if len(shapes) > 1:
    raise ValueError(f'Images of different sizes {sorted(shapes)[:3]} in one batch; use '
                     "data.augment='imagenet' or 'inat' (random resized crop) for "
                     'variable-size sources.')
  return np.stack(images), np.asarray([r['label'] for r in records], np.int32)


class TrainBatches:
  """Host-local training batches indexed by the global step."""

  def __init__(self, dataset, *, global_batch_size: int, seed: int,
               sampler: str = 'instance', augment: str = 'none', crop_padding: int = 4,
               image_size: int = 224, mixup_alpha: float = 0.0,
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
    self.image_size = image_size
    self.mixup_alpha = mixup_alpha
    self.process_index = process_index
    self.sampler = samplers.build_sampler(sampler, dataset.labels, seed=seed,
                                          num_classes=dataset.num_classes)
    self.steps_per_epoch = len(self.sampler) // global_batch_size
    self._cached_epoch = (None, None)

  def image_shape(self) -> tuple[int, int, int]:
    """(H, W, C) of the images in a batch."""
    if self.augment in _RESIZED_CROP:
      return (self.image_size, self.image_size, len(self.dataset.mean))
    return self.dataset[0]['image'].shape

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
    """The augmented, normalised local batch of ``step`` (a pure function of it)."""
    idx = self.indices(step)
    rng = np.random.default_rng([self.seed, 1, step, self.process_index])
    mean, std = self.dataset.mean, self.dataset.std
    if self.augment in _RESIZED_CROP:
      crop = functools.partial(augment.random_resized_crop, rng=rng, size=self.image_size)
      images, labels = load_images(self.dataset, idx, crop)
      images = augment.large_scale_train_batch(images, rng, mean=mean, std=std,
                                               jitter=self.augment == 'imagenet')
    else:
      images, labels = load_images(self.dataset, idx)
      if self.augment == 'autoaugment':
        images = augment.cifar_autoaugment_cutout(images, rng, mean=mean, std=std,
                                                  padding=self.crop_padding)
      else:
        if self.augment != 'none':
          padding = self.crop_padding if self.augment == 'crop_flip' else 0
          images = random_crop_flip(images, rng, padding=padding, flip=True)
        images = normalize(images, mean, std)
    batch = {'image': images, 'label': labels}
    if self.mixup_alpha > 0:
      batch['image'], _, partner, lam = augment.mixup(images, labels, rng, self.mixup_alpha)
      batch['mixup_label'] = partner
      batch['mixup_lambda'] = np.full(len(labels), lam, np.float32)
    return batch

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


def eval_batches(dataset, *, global_batch_size: int, image_size: int | None = None,
                 process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
  """Host-local evaluation batches in file order, padded to a fixed shape.

  Every global batch has ``global_batch_size`` rows so the eval step compiles
  once; padded rows carry ``mask == False``. With ``image_size`` each image is
  resized (shorter side image_size * 256 / 224) and center-cropped, the
  ImageNet test transform.
  """
  transform = None
  if image_size is not None:
    transform = functools.partial(augment.resize_center_crop,
                                  resize=round(image_size * 256 / 224), crop=image_size)
  local = global_batch_size // process_count
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
    mask = idx < n
    images, labels = load_images(dataset, np.where(mask, idx, 0), transform)
    yield {'image': normalize(images, dataset.mean, dataset.std), 'label': labels,
           'mask': mask}
