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

Augmentation: ``AUGMENTATIONS`` maps each ``config.data.augment`` name to a
function (uint8 batch, rng) -> normalised float32 batch composed of the ops
of ``ltjax.data.augment``. They are batch-vectorised numpy where the images
share a size, which measured fastest on small CPUs; for 'imagenet' and 'inat'
the per-sample random resized crop runs first, as each image is loaded
(decoded, for list-file JPEGs) in the input workers. Mixup, when on, is the
last op. Batch keys are those of ``ltjax.data.batch_keys``.
"""

import functools
from typing import Iterator, Protocol

from absl import flags
import grain
import numpy as np

from ltjax.data import augment
from ltjax.data import batch_keys
from ltjax.data import samplers
from ltjax.data.datasets import ArrayDataset


class Augmentation(Protocol):
  """A training augmentation: the loaded uint8 batch -> its normalised float32 batch."""

  def __call__(
      self, images: np.ndarray, rng: np.random.Generator, *, mean, std, crop_padding: int
  ) -> np.ndarray:
    """Augments and normalises one batch.

    Args:
      images: uint8 (B, H, W, C) as loaded; for 'imagenet' and 'inat'
        (``_RESIZED_CROP``) already random-resized-cropped per sample, which
        drew from the same ``rng`` first.
      rng: the batch's generator; each function draws in the order of its ops.
      mean, std: per-channel normalisation in [0, 1] pixel units.
      crop_padding: zero padding of RandomCrop (used by 'crop_flip' and
        'autoaugment' only).

    Returns:
      float32 (B, H, W, C).
    """


def _none(images, rng, *, mean, std, crop_padding):
  """Normalisation only."""
  del rng, crop_padding  # Unused.
  return augment.normalize(images, mean, std)


def _flip(images, rng, *, mean, std, crop_padding):
  """Horizontal flip."""
  del crop_padding  # Unused.
  return augment.normalize(augment.random_crop_flip(images, rng, padding=0, flip=True), mean, std)


def _crop_flip(images, rng, *, mean, std, crop_padding):
  """RandomCrop(H, crop_padding) + flip (the CIFAR standard)."""
  return augment.normalize(
      augment.random_crop_flip(images, rng, padding=crop_padding, flip=True), mean, std
  )


def _autoaugment(images, rng, *, mean, std, crop_padding):
  """crop_flip + AutoAugment CIFAR-10 policy + Cutout(16) (DDC's "RandAug")."""
  return augment.cifar_autoaugment_cutout(images, rng, mean=mean, std=std, padding=crop_padding)


def _imagenet(images, rng, *, mean, std, crop_padding):
  """(RandomResizedCrop(image_size) at load time) + flip + ColorJitter(0.4, 0.4, 0.4)."""
  del crop_padding  # Unused.
  return augment.large_scale_train_batch(images, rng, mean=mean, std=std, jitter=True)


def _inat(images, rng, *, mean, std, crop_padding):
  """(RandomResizedCrop(image_size) at load time) + flip."""
  del crop_padding  # Unused.
  return augment.large_scale_train_batch(images, rng, mean=mean, std=std, jitter=False)


# config.data.augment -> what a training batch goes through after loading.
AUGMENTATIONS: dict[str, Augmentation] = {
    'none': _none,
    'flip': _flip,
    'crop_flip': _crop_flip,
    'autoaugment': _autoaugment,
    'imagenet': _imagenet,
    'inat': _inat,
}
# config.data.decoder: who decodes list-file JPEGs (ltjax.data.dali_decode for 'dali').
DECODERS = ('pillow', 'dali')
# The names whose images are random-resized-cropped to image_size one by one
# while loading (decoding), before their AUGMENTATIONS function.
_RESIZED_CROP = ('imagenet', 'inat')


def device_augmented(augment: str, mixup_alpha: float, device_augment: bool) -> bool:
  """Whether TrainBatches leaves flip, jitter and normalisation to the train step."""
  return bool(device_augment) and augment in _RESIZED_CROP and mixup_alpha <= 0


def jitter_transforms(augment: str) -> int:
  """How many ColorJitter transforms a device-augmented batch of ``augment`` draws."""
  return 3 if augment == 'imagenet' else 0


def load_images(dataset, indices: np.ndarray, transform=None) -> tuple[np.ndarray, np.ndarray]:
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
    raise ValueError(
        f'Images of different sizes {sorted(shapes)[:3]} in one batch; use '
        "data.augment='imagenet' or 'inat' (random resized crop) for "
        'variable-size sources.'
    )
  return np.stack(images), np.asarray([r['label'] for r in records], np.int32)


class TrainBatches:
  """Host-local training batches indexed by the global step."""

  def __init__(
      self,
      dataset,
      *,
      global_batch_size: int,
      seed: int,
      sampler: str = 'instance',
      augment: str = 'none',
      crop_padding: int = 4,
      image_size: int = 224,
      mixup_alpha: float = 0.0,
      device_augment: bool = False,
      decoder: str = 'pillow',
      process_index: int = 0,
      process_count: int = 1,
  ):
    """``device_augment``: with 'imagenet' / 'inat' (and no mixup), batches carry the
    uint8 crops and the batch's flip and jitter draws, and the train step finishes
    the transform (``ltjax.data.device_augment``); ignored otherwise.

    ``decoder='dali'`` (with device_augment): batches carry the encoded files and
    their crop boxes instead of the crops, for ``ltjax.data.dali_decode``."""
    if augment not in AUGMENTATIONS:
      raise ValueError(f'Unknown data.augment {augment!r}; valid: {sorted(AUGMENTATIONS)}.')
    if decoder not in DECODERS:
      raise ValueError(f'Unknown data.decoder {decoder!r}; valid: {DECODERS}.')
    if global_batch_size % process_count:
      raise ValueError(
          f'Global batch size {global_batch_size} is not divisible by the '
          f'number of processes {process_count}.'
      )
    if len(dataset) < global_batch_size:
      raise ValueError(
          f'The training set has {len(dataset)} samples, fewer than one '
          f'batch of {global_batch_size}; lower config.batch_size.'
      )
    self.dataset = dataset
    self.global_batch_size = global_batch_size
    self.local_batch_size = global_batch_size // process_count
    self.seed = seed
    self.augment = augment
    self.crop_padding = crop_padding
    self.image_size = image_size
    self.mixup_alpha = mixup_alpha
    self.device_augment = device_augmented(augment, mixup_alpha, device_augment)
    self.decoder = decoder
    if decoder == 'dali' and not self.device_augment:
      raise ValueError(
          "data.decoder='dali' decodes and crops for the device-side transform: it needs "
          "data.augment='imagenet' or 'inat', data.device_augment=True and no mixup "
          f'(here augment={augment!r}, device_augment={device_augment}, '
          f"mixup_alpha={mixup_alpha}); or set data.decoder='pillow'."
      )
    if decoder == 'dali' and not hasattr(dataset, 'encoded'):
      raise ValueError(
          f"data.decoder='dali' reads encoded JPEG files; {type(dataset).__name__} holds "
          "decoded images: use it with data.decoder='pillow'."
      )
    self.process_index = process_index
    self.sampler = samplers.build_sampler(
        sampler, dataset.labels, seed=seed, num_classes=dataset.num_classes
    )
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
    return self.epoch_indices(epoch)[start : start + self.local_batch_size]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The augmented, normalised local batch of ``step`` (a pure function of it)."""
    idx = self.indices(step)
    rng = np.random.default_rng([self.seed, 1, step, self.process_index])
    if self.decoder == 'dali':  # The same crop draws from the files' headers; DALI decodes.
      encoded, boxes = [], []
      for i in idx:
        data, (height, width) = self.dataset.encoded(int(i))
        encoded.append(data)
        boxes.append(augment.random_resized_crop_params(height, width, rng))
      labels = np.asarray(self.dataset.labels[idx], np.int32)
      return {
          batch_keys.ENCODED: encoded,
          batch_keys.CROP: np.asarray(boxes, np.int32),
          batch_keys.LABEL: labels,
          **self._device_draws(len(labels), rng),
      }
    crop = None
    if self.augment in _RESIZED_CROP:  # Per sample, as each image is loaded; draws first.
      crop = functools.partial(augment.random_resized_crop, rng=rng, size=self.image_size)
    images, labels = load_images(self.dataset, idx, crop)
    if self.device_augment:
      return {
          batch_keys.IMAGE: images,
          batch_keys.LABEL: labels,
          **self._device_draws(len(labels), rng),
      }
    images = AUGMENTATIONS[self.augment](
        images, rng, mean=self.dataset.mean, std=self.dataset.std, crop_padding=self.crop_padding
    )
    batch = {batch_keys.IMAGE: images, batch_keys.LABEL: labels}
    if self.mixup_alpha > 0:
      mixed, _, partner, lam = augment.mixup(images, labels, rng, self.mixup_alpha)
      batch[batch_keys.IMAGE] = mixed
      batch[batch_keys.MIXUP_LABEL] = partner
      batch[batch_keys.MIXUP_LAMBDA] = np.full(len(labels), lam, np.float32)
    return batch

  def _device_draws(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The draws of _imagenet / _inat after the crops, in their order; applied on device."""
    flips = augment.flip_draws(batch_size, rng)
    jitter = 0.4 if jitter_transforms(self.augment) else 0.0
    ops, factors = augment.color_jitter_params(batch_size, rng, jitter, jitter, jitter)
    return {batch_keys.FLIP: flips, batch_keys.JITTER_OPS: ops, batch_keys.JITTER_FACTORS: factors}

  def iterate(
      self,
      start_step: int,
      num_steps: int,
      *,
      num_threads: int = 1,
      num_workers: int = 0,
      buffer_size: int = 2,
  ) -> Iterator[dict[str, np.ndarray]]:
    """The batches of steps [start_step, start_step + num_steps), computed ahead.

    Args:
      num_threads: grain read threads (0: batches are made in the caller).
      num_workers: grain worker processes (0: none); each makes whole batches.
      buffer_size: batches computed ahead per thread or worker.
    """
    dataset = grain.MapDataset.range(start_step, start_step + num_steps).map(self.batch)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer_size)
    )
    if num_workers > 0:
      if not flags.FLAGS.is_parsed():
        raise RuntimeError(
            'grain worker processes (config.data.num_workers > 0) need absl flags parsed: '
            'run through launch/train.py, or call absl.flags.FLAGS.mark_as_parsed() first '
            '(e.g. in a notebook).'
        )
      iter_dataset = iter_dataset.mp_prefetch(
          grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=buffer_size)
      )
    return iter(iter_dataset)


def eval_batches(
    dataset,
    *,
    global_batch_size: int,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Host-local evaluation batches in file order, padded to a fixed shape.

  Every global batch has ``global_batch_size`` rows so the eval step compiles
  once; padded rows carry ``mask == False``. With ``image_size`` each image is
  resized (shorter side image_size * 256 / 224) and center-cropped, the
  ImageNet test transform.
  """
  transform = None
  if image_size is not None:
    transform = functools.partial(
        augment.resize_center_crop, resize=round(image_size * 256 / 224), crop=image_size
    )
  local = global_batch_size // process_count
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start + process_index * local, start + (process_index + 1) * local)
    mask = idx < n
    images, labels = load_images(dataset, np.where(mask, idx, 0), transform)
    yield {
        batch_keys.IMAGE: augment.normalize(images, dataset.mean, dataset.std),
        batch_keys.LABEL: labels,
        batch_keys.MASK: mask,
    }
