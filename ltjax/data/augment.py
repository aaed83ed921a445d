"""Image augmentations of the official long-tailed pipelines, in numpy and Pillow.

Every op takes an explicit ``np.random.Generator``; the caller derives it from
(seed, step) (see ``pipeline.TrainBatches``), so a batch's augmentation is a
pure function of its step. Each docstring states the order of the random
draws, which the tests replay.

Per-sample ops (variable-size decoded images, run in input workers before
batching; uint8 (H, W, C) arrays or PIL images in, uint8 (H, W, C) out):

  random_resized_crop   torchvision ``RandomResizedCrop`` (10 area/log-ratio
                        attempts, then the central-crop fallback; Pillow
                        bilinear resize).
  resize_shorter        torchvision ``Resize(256)`` (int truncation of the long
                        side); also what ``python -m ltjax.prepare`` stores.
  resize_center_crop    torchvision ``Resize(256)`` + ``CenterCrop(224)``
                        (round() offsets).
  auto_augment_cifar10  AutoAugment's CIFAR-10 policy (Cubuk et al., CVPR'19,
                        appendix table: 25 sub-policies of two (op, p, level))
                        with the op semantics and magnitude ranges of the
                        DeepVoltaire/AutoAugment ``CIFAR10Policy`` that DDC and
                        CC-SAM import.

Batch ops ((B, H, W, C) in and out; vectorised over the batch, except
color_jitter's arithmetic, which measured faster image by image):

  random_crop_flip      torchvision ``RandomCrop(H, padding)`` +
                        ``RandomHorizontalFlip()`` (the CIFAR standard).
  horizontal_flip       torchvision ``RandomHorizontalFlip(p)``.
  color_jitter          torchvision ``ColorJitter(b, c, s, hue=0)`` semantics.
  cutout                Cutout (DeVries & Taylor 2017, uoguelph-mlrg/Cutout).
  normalize             ``ToTensor`` + ``Normalize(mean, std)``: uint8 -> float32.
  mixup                 mixup (Zhang et al., ICLR'18) as CC-SAM's
                        ``mixup_data``: one lambda ~ Beta(a, a) per batch.

The two recipes at the end compose these ops in the official order
(``pipeline.AUGMENTATIONS`` maps ``config.data.augment`` onto them).

Deliberate deviations from the PyTorch code, all sub-quantisation-level:
ColorJitter computes in float32 and rounds once at the end (PIL truncates to
uint8 after each enhance), and the random draws come from numpy, not torch or
Python's ``random``, so no stream is bit-identical to a PyTorch run.
"""

import math
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

_BILINEAR = Image.Resampling.BILINEAR
_BICUBIC = Image.Resampling.BICUBIC
_NEAREST = Image.Resampling.NEAREST
_AFFINE = Image.Transform.AFFINE

# ITU-R 601-2 luma, the weights of PIL's convert('L') and of the task brief
# (torchvision's tensor path uses 0.2989 for red; the difference is < 1e-4).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _to_pil(image) -> Image.Image:
  """uint8 (H, W, 3|1) array or PIL image -> PIL image ('RGB' or 'L')."""
  if isinstance(image, Image.Image):
    return image
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'Expected a uint8 (H, W, 1|3) image, got {image.dtype} {image.shape}.')
  if image.shape[-1] == 1:
    return Image.fromarray(image[:, :, 0])  # 'L'
  return Image.fromarray(image)  # 'RGB'


def _to_array(image: Image.Image) -> np.ndarray:
  """PIL image -> writable uint8 (H, W, C)."""
  array = np.array(image)  # np.asarray would be a read-only view of PIL's bytes.
  return array[:, :, None] if array.ndim == 2 else array


def _pair(size) -> tuple[int, int]:
  return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


# ----------------------------------------------------------------------------
# Per-sample geometry (large-scale data sets).
# ----------------------------------------------------------------------------


def random_resized_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """torchvision ``RandomResizedCrop.get_params``: the crop box (top, left, h, w).

  Up to 10 attempts, each drawing ``rng.uniform(*scale)`` (area fraction), then
  ``rng.uniform(log ratio[0], log ratio[1])`` (log aspect w/h); a box that fits
  then draws ``top = rng.integers(0, H - h + 1)`` and ``left = rng.integers(0,
  W - w + 1)``. If none fits: the central crop of the whole image, narrowed to
  the nearest allowed aspect ratio.
  """
  area = height * width
  log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    # Python's round (half to even), as torchvision.
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return top, left, h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w = width
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    h = height
    w = int(round(h * max(ratio)))
  else:
    w, h = width, height
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    image,
    rng: np.random.Generator,
    size=224,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """torchvision ``RandomResizedCrop(size, scale, ratio)`` on one PIL-decoded image.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    rng: draws as in ``random_resized_crop_params``.
    size: output side, or (height, width).
    scale: range of the crop area as a fraction of the image area.
    ratio: range of the crop aspect ratio w / h (sampled log-uniformly).

  Returns:
    uint8 (size, size, C): the crop, resized with Pillow's (antialiased)
    bilinear filter. The crop is cut out first and then resized, so the filter
    never reads pixels outside the box (as torchvision's crop + resize).
  """
  pil = _to_pil(image)
  width, height = pil.size
  top, left, h, w = random_resized_crop_params(height, width, rng, scale, ratio)
  out_h, out_w = _pair(size)
  crop = pil.crop((left, top, left + w, top + h))
  return _to_array(crop.resize((out_w, out_h), _BILINEAR))


def resize_shorter(image, size: int) -> Image.Image:
  """torchvision ``Resize(size)``: the shorter side becomes ``size``, bilinear (Pillow).

  The longer side becomes ``int(size * long / short)`` (truncated). An image
  already of that size is returned as it is, not resampled.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    size: target length of the shorter side.

  Returns:
    The resized PIL image.
  """
  pil = _to_pil(image)
  w, h = pil.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  if (new_w, new_h) == (w, h):
    return pil
  return pil.resize((new_w, new_h), _BILINEAR)


def resize_center_crop(image, resize: int = 256, crop=224) -> np.ndarray:
  """torchvision ``Resize(resize)`` + ``CenterCrop(crop)``: the evaluation transform.

  The shorter side becomes ``resize`` and the longer ``int(resize * long /
  short)`` (truncated), bilinear (Pillow); an image already of that size is
  not resampled. The crop offsets are ``int(round((H - h) / 2))`` and
  ``int(round((W - w) / 2))`` with Python's half-to-even round, so a 117-pixel
  excess puts 58 pixels left, 59 right. A crop larger than the image is first
  zero-padded, ``(excess // 2, (excess + 1) // 2)`` per side, as torchvision.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    resize: target length of the shorter side.
    crop: output side, or (height, width).

  Returns:
    uint8 (crop_h, crop_w, C).
  """
  array = _to_array(resize_shorter(image, resize))
  new_h, new_w = array.shape[:2]
  crop_h, crop_w = _pair(crop)
  if crop_h > new_h or crop_w > new_w:
    pad_h, pad_w = max(crop_h - new_h, 0), max(crop_w - new_w, 0)
    array = np.pad(array, ((pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
    new_h, new_w = array.shape[:2]
  top = int(round((new_h - crop_h) / 2.0))
  left = int(round((new_w - crop_w) / 2.0))
  return np.ascontiguousarray(array[top : top + crop_h, left : left + crop_w])


# ----------------------------------------------------------------------------
# Batch ops.
# ----------------------------------------------------------------------------


def random_crop_flip(
    images: np.ndarray, rng: np.random.Generator, *, padding: int, flip: bool
) -> np.ndarray:
  """torchvision ``RandomCrop(H, padding)`` + ``RandomHorizontalFlip()`` on a batch.

  Each image is zero-padded by ``padding`` pixels a side and an (H, W) window
  cut out of it (one strided view of the batch, no per-image loop); then,
  with ``flip``, mirrored left-right with probability 1/2.

  Random draws: with ``padding > 0``, ``dy = rng.integers(0, 2 * padding + 1,
  B)``, then ``dx`` the same (the window's top-left corner in the padded
  image); with ``flip``, ``rng.random(B) < 0.5`` (the draw of
  ``horizontal_flip``, so ``padding=0`` agrees with it).

  Args:
    images: (B, H, W, C), any dtype (uint8 pixels in the pipelines).
    rng: generator.
    padding: zero padding a side; 0 skips the crop and its draws.
    flip: apply the random horizontal flip.

  Returns:
    (B, H, W, C) of the input dtype; the input itself when nothing applies.
  """
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


def flip_draws(batch_size: int, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  """``horizontal_flip``'s draw: which images of a batch are mirrored, (B,) bool."""
  return rng.random(batch_size) < p


def horizontal_flip(images: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
  """torchvision ``RandomHorizontalFlip(p)`` per image of a batch.

  Draws ``rng.random(B) < p`` (the same draw as ``random_crop_flip`` with
  ``padding=0``, so the two agree for p = 0.5).

  Args:
    images: (B, H, W, C), any dtype.
    rng: generator.
    p: probability that an image is mirrored left-right.

  Returns:
    A new (B, H, W, C) array of the input dtype.
  """
  flips = flip_draws(images.shape[0], rng, p)
  out = images.copy()
  out[flips] = images[flips, :, ::-1]
  return out


_BRIGHTNESS, _CONTRAST, _SATURATION = 0, 1, 2


def _jitter_range(value, name: str) -> tuple[float, float] | None:
  """torchvision's ``ColorJitter._check_input``: a factor range, None if identity."""
  if np.isscalar(value):
    if value < 0:
      raise ValueError(f'{name} must be non-negative, got {value}.')
    lo, hi = max(0.0, 1.0 - value), 1.0 + value
  else:
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo <= hi:
      raise ValueError(f'{name} range must satisfy 0 <= lo <= hi, got {value}.')
  return None if lo == hi == 1.0 else (float(lo), float(hi))


# Operation ids of color_jitter_params' ``ops``.
JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION = _BRIGHTNESS, _CONTRAST, _SATURATION


def color_jitter_params(
    batch_size: int, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4
) -> tuple[np.ndarray, np.ndarray]:
  """The random draws of ``color_jitter`` for a batch: (ops, factors), each (B, n).

  ``ops[i]`` lists image i's n enabled transforms in the order they apply
  (JITTER_BRIGHTNESS, JITTER_CONTRAST, JITTER_SATURATION), ``factors[i]``
  their factors (float32), drawn as ``color_jitter`` documents. The host
  (``color_jitter``) and the device (``ltjax.data.device_augment``) apply the
  same draws, so both give one batch for one (seed, step).
  """
  ranges = [
      (op, r)
      for op, r in (
          (_BRIGHTNESS, _jitter_range(brightness, 'brightness')),
          (_CONTRAST, _jitter_range(contrast, 'contrast')),
          (_SATURATION, _jitter_range(saturation, 'saturation')),
      )
      if r is not None
  ]
  n = len(ranges)
  if not n:
    return np.zeros((batch_size, 0), np.int32), np.zeros((batch_size, 0), np.float32)
  order = rng.permuted(np.tile(np.arange(n), (batch_size, 1)), axis=1)
  factors = np.stack([rng.uniform(lo, hi, batch_size) for _, (lo, hi) in ranges], axis=1)
  ops = np.array([op for op, _ in ranges], np.int32)[order]  # (B, n) in application order.
  return ops, np.take_along_axis(factors, order, axis=1).astype(np.float32)


def color_jitter(
    images: np.ndarray, rng: np.random.Generator, brightness=0.4, contrast=0.4, saturation=0.4
) -> np.ndarray:
  """torchvision ``ColorJitter(brightness, contrast, saturation, hue=0)`` on a batch.

  Each image gets its own factors and its own random order of the enabled
  transforms. With bound = 255 (uint8 input) or 1 (float input), each
  transform is a blend ``clip(f * x + (1 - f) * d, 0, bound)`` with
    brightness: d = 0;
    contrast:   d = the mean of the image's grayscale (a scalar per image);
    saturation: d = the grayscale image (identity for 1-channel images);
  grayscale = 0.299 R + 0.587 G + 0.114 B of the current (already jittered)
  image. A transform is disabled when its factor range is {1} (value 0).

  The random draws are one vectorised call per quantity: ``order =
  rng.permuted(np.tile(arange(n), (B, 1)), axis=1)`` over the n enabled
  transforms (listed in the order brightness, contrast, saturation), then
  ``rng.uniform(lo, hi, B)`` for each enabled transform in that list order.
  (torchvision draws a permutation and the factors per image; only the
  stream differs.) The arithmetic then runs image by image: on 224 x 224 x 3
  this measured 3.2x faster on 2 CPU cores than blending the whole batch per
  stage, because one image's float32 copy (600 KB) stays in cache across the
  ~10 passes, and numpy broadcasts slowly along a size-3 channel axis.

  Args:
    images: uint8 (B, H, W, C) or float (B, H, W, C) in [0, 1]; C in {1, 3}.
    rng: generator.
    brightness, contrast, saturation: a non-negative v for factors
      ~ U[max(0, 1 - v), 1 + v], or an explicit (lo, hi) range.

  Returns:
    uint8 in -> uint8 out (computed in float32 on the 0..255 scale and rounded
    once at the end, where PIL truncates after each transform: a < 1 level
    difference); float in -> float32 out in [0, 1].
  """
  is_uint8 = images.dtype == np.uint8
  b, _, _, channels = images.shape
  ops, factors = color_jitter_params(b, rng, brightness, contrast, saturation)
  if not ops.shape[1]:
    return images.copy() if is_uint8 else images.astype(np.float32)
  ops = ops.tolist()

  bound = np.float32(255.0 if is_uint8 else 1.0)
  luma = np.array(LUMA_WEIGHTS if channels == 3 else (1.0,), np.float32)
  out = np.empty(images.shape, np.uint8 if is_uint8 else np.float32)
  for i in range(b):
    # A C-ordered copy, blended in place; ``pixels`` is a view of it.
    x = images[i].astype(np.float32, order='C')
    pixels = x.reshape(-1, channels)
    for op, f in zip(ops[i], factors[i]):
      if op == _BRIGHTNESS:
        x *= f
      elif op == _CONTRAST:
        mean = (pixels @ luma).mean(dtype=np.float64)
        x *= f
        x += np.float32((1.0 - f) * mean)
      elif channels > 1:  # Saturation; 1-channel images have none to change.
        gray = (pixels @ (luma * (1.0 - f))).reshape(x.shape[:2])  # (1 - f) * gray.
        x *= f
        for c in range(channels):  # Faster than broadcasting gray[..., None].
          x[..., c] += gray
      np.clip(x, 0.0, bound, out=x)
    if is_uint8:
      x += 0.5  # x >= 0, so the truncating cast below rounds half up.
    out[i] = x
  return out


def cutout(
    images: np.ndarray, rng: np.random.Generator, length: int = 16, holes: int = 1
) -> np.ndarray:
  """Cutout (DeVries & Taylor 2017): zero ``holes`` squares per image.

  Reference-implementation semantics: a centre (y, x) uniform over all pixels,
  then rows [y - length // 2, y + length // 2) and the same columns, clipped to
  the image, are set to 0 (all channels). Squares may overlap and are cut at
  the borders, so a hole has at most ``2 * (length // 2)`` pixels a side.

  Where it goes: DDC ("RandAug") and the DeepVoltaire recipe run
  ToTensor -> Cutout -> Normalize, so the holes are *black* and become
  (0 - mean) / std after normalisation. To reproduce that, call this on the
  uint8 (or [0, 1]) batch *before* ``normalize`` (as
  ``cifar_autoaugment_cutout`` does). Called after ``normalize`` it zeroes the
  normalised values, i.e. fills holes with the data-set mean colour.

  Random draws: ``ys = rng.integers(0, H, (B, holes))``, then
  ``xs = rng.integers(0, W, (B, holes))``.

  Args:
    images: (B, H, W, C), any dtype (uint8 pixels or float, normalised or not).
    rng: generator.
    length: side of the square.
    holes: squares per image.

  Returns:
    A new array like ``images`` with the squares set to 0.
  """
  b, h, w = images.shape[:3]
  ys = rng.integers(0, h, (b, holes))
  xs = rng.integers(0, w, (b, holes))
  half = length // 2
  rows, cols = np.arange(h), np.arange(w)
  # (B, holes, H) and (B, holes, W) interval masks; their outer product is the
  # clipped square, and clipping is implicit in the comparisons.
  in_rows = (rows >= (ys - half)[..., None]) & (rows < (ys + half)[..., None])
  in_cols = (cols >= (xs - half)[..., None]) & (cols < (xs + half)[..., None])
  mask = np.any(in_rows[..., :, None] & in_cols[..., None, :], axis=1)  # (B, H, W)
  out = images.copy()
  out[mask] = 0
  return out


def normalize(images: np.ndarray, mean, std) -> np.ndarray:
  """``ToTensor`` + ``Normalize(mean, std)``: uint8 (B, H, W, C) -> float32.

  ``(x / 255 - mean) / std`` per channel, computed in float32 (no randomness).

  Args:
    images: uint8 (B, H, W, C) (or any shape ending in C).
    mean, std: per-channel statistics in [0, 1] pixel units, length C.

  Returns:
    float32 of the input shape.
  """
  x = images.astype(np.float32) * (1.0 / 255.0)
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def mixup(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, alpha: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """mixup (Zhang et al., ICLR'18) in CC-SAM's formulation (``mixup_data``).

  One ``lam = rng.beta(alpha, alpha)`` per batch, then the partner
  permutation ``perm = rng.permutation(B)``; ``mixed = lam * x + (1 - lam) *
  x[perm]``. Train with ``lam * loss(y) + (1 - lam) * loss(y[perm])``. For
  ``alpha <= 0`` nothing is drawn: lam = 1 and perm is the identity. CC-SAM
  mixes the normalised float batch on the device side of the loader, so pass
  the output of ``normalize``.

  Args:
    images: (B, H, W, C) float (uint8 is promoted to float32).
    labels: (B,) int.
    rng: generator.
    alpha: Beta concentration.

  Returns:
    mixed_images: float32 (B, H, W, C) (float64 in -> float64 out).
    labels: (B,) the input labels.
    partner_labels: (B,) ``labels[perm]``.
    lam: the mixing weight of ``labels``, a Python float.
  """
  if not np.issubdtype(images.dtype, np.floating):
    images = images.astype(np.float32)
  if alpha <= 0:
    return images, labels, labels, 1.0
  lam = float(rng.beta(alpha, alpha))
  perm = rng.permutation(images.shape[0])
  mixed = images * images.dtype.type(lam)
  mixed += images[perm] * images.dtype.type(1.0 - lam)
  return mixed, labels, labels[perm], lam


# ----------------------------------------------------------------------------
# AutoAugment, CIFAR-10 policy.
# ----------------------------------------------------------------------------

# The policy found on reduced CIFAR-10: the table of 25 sub-policies in the
# appendix of Cubuk et al., "AutoAugment: Learning Augmentation Policies from
# Data" (CVPR 2019). Each sub-policy is two (op, probability, magnitude level
# 0..9) applied in sequence; level is ignored by the ops without a magnitude.
CIFAR10_POLICY = (
    (('Invert', 0.1, 7), ('Contrast', 0.2, 6)),
    (('Rotate', 0.7, 2), ('TranslateX', 0.3, 9)),
    (('Sharpness', 0.8, 1), ('Sharpness', 0.9, 3)),
    (('ShearY', 0.5, 8), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.5, 8), ('Equalize', 0.9, 2)),
    (('ShearY', 0.2, 7), ('Posterize', 0.3, 7)),
    (('Color', 0.4, 3), ('Brightness', 0.6, 7)),
    (('Sharpness', 0.3, 9), ('Brightness', 0.7, 9)),
    (('Equalize', 0.6, 5), ('Equalize', 0.5, 1)),
    (('Contrast', 0.6, 7), ('Sharpness', 0.6, 5)),
    (('Color', 0.7, 7), ('TranslateX', 0.5, 8)),
    (('Equalize', 0.3, 7), ('AutoContrast', 0.4, 8)),
    (('TranslateY', 0.4, 3), ('Sharpness', 0.2, 6)),
    (('Brightness', 0.9, 6), ('Color', 0.2, 8)),
    (('Solarize', 0.5, 2), ('Invert', 0.0, 3)),
    (('Equalize', 0.2, 0), ('AutoContrast', 0.6, 0)),
    (('Equalize', 0.2, 8), ('Equalize', 0.6, 4)),
    (('Color', 0.9, 9), ('Equalize', 0.6, 6)),
    (('AutoContrast', 0.8, 4), ('Solarize', 0.2, 8)),
    (('Brightness', 0.1, 3), ('Color', 0.7, 0)),
    (('Solarize', 0.4, 5), ('AutoContrast', 0.9, 3)),
    (('TranslateY', 0.9, 9), ('TranslateY', 0.7, 9)),
    (('AutoContrast', 0.9, 2), ('Solarize', 0.2, 3)),
    (('Equalize', 0.8, 8), ('Invert', 0.1, 3)),
    (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1)),
)

# Magnitude level k in 0..9 maps linearly to lo + (hi - lo) * k / 9: the paper's
# ranges (its Table of operations: shear 0.3, translate 150 px of 331,
# rotate 30 deg, enhance factors 1 +- 0.9 i.e. [0.1, 1.9], posterize 8..4 bits,
# solarize threshold 256..0) discretised into 10 levels, with translation as a
# fraction of the image side as in the DeepVoltaire code the repos use.
AUTOAUGMENT_RANGES = {
    'ShearX': (0.0, 0.3),
    'ShearY': (0.0, 0.3),
    'TranslateX': (0.0, 150 / 331),
    'TranslateY': (0.0, 150 / 331),
    'Rotate': (0.0, 30.0),
    'Color': (0.0, 0.9),
    'Posterize': (8.0, 4.0),
    'Solarize': (256.0, 0.0),
    'Contrast': (0.0, 0.9),
    'Sharpness': (0.0, 0.9),
    'Brightness': (0.0, 0.9),
    'AutoContrast': None,
    'Equalize': None,
    'Invert': None,
}
AUTOAUGMENT_OPS = tuple(AUTOAUGMENT_RANGES)

# Ops whose magnitude gets a random sign (p = 1/2), as in DeepVoltaire's
# CIFAR10Policy. Rotate is *not* signed there (always counter-clockwise), and
# we keep that to match DDC / CC-SAM; the paper and torchvision sign it.
_SIGNED = frozenset(
    {'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Color', 'Contrast', 'Sharpness', 'Brightness'}
)


def autoaugment_magnitude(op: str, level: int) -> float | None:
  """The unsigned magnitude of ``op`` at ``level`` (0..9); None for ops without one."""
  span = AUTOAUGMENT_RANGES[op]
  if span is None:
    return None
  lo, hi = span
  value = lo + (hi - lo) * level / 9
  return float(int(round(value))) if op == 'Posterize' else value


def autoaugment_op(image, op: str, magnitude: float | None) -> np.ndarray:
  """Applies one AutoAugment op with a signed magnitude (no randomness).

  Geometric ops fill uncovered pixels with gray 128, as DeepVoltaire:
  ShearX/Y: affine x_in = x + m * y (or y_in = y + m * x) about the top-left
  corner, bicubic. TranslateX/Y: shift by m * width (height) pixels, nearest.
  Rotate: m degrees counter-clockwise about the centre, nearest.
  Color/Contrast/Sharpness/Brightness: PIL ImageEnhance with factor 1 + m.
  Posterize: keep m bits. Solarize: invert pixels >= m. AutoContrast,
  Equalize, Invert: PIL ImageOps.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    op: a name in ``AUTOAUGMENT_OPS``.
    magnitude: signed magnitude (see ``autoaugment_magnitude``).

  Returns:
    uint8 (H, W, C).
  """
  return _to_array(_apply_pil_op(_to_pil(image), op, magnitude))


def _apply_pil_op(pil: Image.Image, op: str, m: float | None) -> Image.Image:
  fill = 128 if pil.mode == 'L' else (128,) * len(pil.getbands())
  if op == 'ShearX':
    return pil.transform(pil.size, _AFFINE, (1, m, 0, 0, 1, 0), _BICUBIC, fillcolor=fill)
  if op == 'ShearY':
    return pil.transform(pil.size, _AFFINE, (1, 0, 0, m, 1, 0), _BICUBIC, fillcolor=fill)
  if op == 'TranslateX':
    return pil.transform(
        pil.size, _AFFINE, (1, 0, m * pil.size[0], 0, 1, 0), _NEAREST, fillcolor=fill
    )
  if op == 'TranslateY':
    return pil.transform(
        pil.size, _AFFINE, (1, 0, 0, 0, 1, m * pil.size[1]), _NEAREST, fillcolor=fill
    )
  if op == 'Rotate':
    return pil.rotate(m, _NEAREST, fillcolor=fill)
  if op == 'Color':
    return ImageEnhance.Color(pil).enhance(1 + m)
  if op == 'Contrast':
    return ImageEnhance.Contrast(pil).enhance(1 + m)
  if op == 'Sharpness':
    return ImageEnhance.Sharpness(pil).enhance(1 + m)
  if op == 'Brightness':
    return ImageEnhance.Brightness(pil).enhance(1 + m)
  if op == 'Posterize':
    return ImageOps.posterize(pil, int(m))
  if op == 'Solarize':
    return ImageOps.solarize(pil, m)
  if op == 'AutoContrast':
    return ImageOps.autocontrast(pil)
  if op == 'Equalize':
    return ImageOps.equalize(pil)
  if op == 'Invert':
    return ImageOps.invert(pil)
  raise ValueError(f'Unknown AutoAugment op {op!r}; valid: {AUTOAUGMENT_OPS}.')


def apply_subpolicy(image, subpolicy, rng: np.random.Generator) -> np.ndarray:
  """Applies one sub-policy ((op, p, level), (op, p, level)) in order.

  Random draws per op: ``rng.random() < p`` decides whether it runs; if it
  runs and its magnitude is signed, ``rng.random() < 0.5`` picks +m (else -m).

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    subpolicy: a sequence of (op name, probability, level).
    rng: generator.

  Returns:
    uint8 (H, W, C).
  """
  pil = _to_pil(image)
  for op, p, level in subpolicy:
    if rng.random() < p:
      m = autoaugment_magnitude(op, level)
      if op in _SIGNED and rng.random() >= 0.5:
        m = -m
      pil = _apply_pil_op(pil, op, m)
  return _to_array(pil)


def auto_augment_cifar10(image, rng: np.random.Generator) -> np.ndarray:
  """AutoAugment CIFAR-10 policy ("CIFAR10Policy" of DDC's "RandAug", CC-SAM).

  Draws the sub-policy ``rng.integers(25)`` uniformly, then applies it with
  ``apply_subpolicy``. Runs on one image (PIL ops); loop over a batch.

  Args:
    image: uint8 (H, W, C) with C in {1, 3}, or a PIL image.
    rng: generator.

  Returns:
    uint8 (H, W, C).
  """
  return apply_subpolicy(image, CIFAR10_POLICY[rng.integers(len(CIFAR10_POLICY))], rng)


# ----------------------------------------------------------------------------
# Official recipes (batch in, normalised float32 batch out).
# ----------------------------------------------------------------------------


def cifar_autoaugment_cutout(
    images: np.ndarray,
    rng: np.random.Generator,
    *,
    mean,
    std,
    padding: int = 4,
    cutout_length: int = 16,
) -> np.ndarray:
  """DDC's "RandAug" / CC-SAM's "stronger augmentation" on a uint8 CIFAR batch.

  RandomCrop(32, padding) -> HorizontalFlip -> CIFAR10Policy -> ToTensor ->
  Cutout(1, 16) -> Normalize: Cutout runs on the uint8 batch, before
  ``normalize``, so the holes are black exactly as in DDC.

  Args:
    images: uint8 (B, H, W, C).
    rng: generator, consumed in the order of the ops.
    mean, std: per-channel normalisation in [0, 1] pixel units.
    padding: zero padding of the random crop.
    cutout_length: Cutout square side.

  Returns:
    float32 (B, H, W, C).
  """
  images = random_crop_flip(images, rng, padding=padding, flip=True)
  images = np.stack([auto_augment_cifar10(image, rng) for image in images])
  images = cutout(images, rng, length=cutout_length, holes=1)
  return normalize(images, mean, std)


def large_scale_train_batch(
    images: np.ndarray, rng: np.random.Generator, *, mean, std, jitter: bool = True
) -> np.ndarray:
  """The Decoupling-lineage ImageNet-LT/Places-LT train transform after the crop.

  The per-sample ``random_resized_crop`` runs in the workers; on the batch of
  its outputs: HorizontalFlip -> ColorJitter(0.4, 0.4, 0.4) (``jitter=False``
  for iNaturalist) -> ToTensor -> Normalize.

  Args:
    images: uint8 (B, 224, 224, 3).
    rng: generator, consumed in the order of the ops.
    mean, std: per-channel normalisation in [0, 1] pixel units.
    jitter: apply ColorJitter.

  Returns:
    float32 (B, H, W, C).
  """
  images = horizontal_flip(images, rng)
  if jitter:
    images = color_jitter(images, rng)
  return normalize(images, mean, std)
