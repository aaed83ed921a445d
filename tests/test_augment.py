"""Tests for ltjax.data.augment: each op against a hand-computed expectation or a formula."""

# The random draws are replayed from a generator with the same seed, in the
# order each docstring documents.

import math

import numpy as np
import pytest
from PIL import Image

from ltjax.data import augment


def _images(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth_image(h, w, seed=0):
  """A uint8 RGB image with structure (resampling bugs show up, unlike in noise)."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, 3)
  chans = [127.5 + 127.5 * np.sin(xx / (7 + 3 * c) + yy / (11 + c) + phase[c]) for c in range(3)]
  return np.stack(chans, axis=-1).round().astype(np.uint8)


# ----- random_resized_crop ---------------------------------------------------


@pytest.mark.parametrize('shape', [(375, 500, 3), (500, 375, 3), (64, 64, 1)])
def test_random_resized_crop_shape_and_determinism(shape):
  image = _images(shape)
  for seed in range(5):
    out = augment.random_resized_crop(image, np.random.default_rng(seed), size=224)
    assert out.shape == (224, 224, shape[-1]) and out.dtype == np.uint8
    again = augment.random_resized_crop(image, np.random.default_rng(seed), size=224)
    np.testing.assert_array_equal(out, again)
  out = augment.random_resized_crop(image, np.random.default_rng(0), size=(96, 128))
  assert out.shape == (96, 128, shape[-1])


def test_random_resized_crop_full_square_is_plain_resize():
  image = _smooth_image(100, 100)
  out = augment.random_resized_crop(
      image, np.random.default_rng(3), size=224, scale=(1.0, 1.0), ratio=(1.0, 1.0)
  )
  expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(out, expected)


def test_random_resized_crop_params_replay():
  """The params follow torchvision's algorithm, replayed draw by draw."""
  h, w, scale, ratio = 375, 500, (0.08, 1.0), (3 / 4, 4 / 3)
  for seed in range(50):
    got = augment.random_resized_crop_params(h, w, np.random.default_rng(seed), scale, ratio)
    rng = np.random.default_rng(seed)
    for _ in range(10):
      area = h * w * rng.uniform(*scale)
      aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
      cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
      if 0 < cw <= w and 0 < ch <= h:
        expected = (rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw)
        break
    assert got == expected
    top, left, ch, cw = got
    assert 0 <= top <= h - ch and 0 <= left <= w - cw
    # Rounding of w and h moves area and aspect slightly outside the ranges.
    assert scale[0] * 0.95 <= ch * cw / (h * w) <= scale[1]
    assert ratio[0] * 0.97 <= cw / ch <= ratio[1] * 1.03


def test_random_resized_crop_central_fallback():
  # A 10 x 1000 strip cannot hold a square of >= 90% of its area in 10 tries:
  # the fallback is the central crop at the widest allowed ratio, 10 x 10.
  image = _smooth_image(10, 1000)
  rng = np.random.default_rng(0)
  params = augment.random_resized_crop_params
  assert params(10, 1000, rng, (0.9, 1.0), (1.0, 1.0)) == (0, 495, 10, 10)
  assert params(1000, 10, rng, (0.9, 1.0), (1.0, 1.0)) == (495, 0, 10, 10)
  # Within the ratio range: the whole image.
  assert params(10, 12, rng, (2.0, 2.0), (0.5, 2.0)) == (0, 0, 10, 12)
  out = augment.random_resized_crop(
      image, np.random.default_rng(0), size=20, scale=(0.9, 1.0), ratio=(1.0, 1.0)
  )
  expected = np.asarray(
      Image.fromarray(image[:, 495:505]).resize((20, 20), Image.Resampling.BILINEAR)
  )
  np.testing.assert_array_equal(out, expected)


# ----- resize_center_crop ----------------------------------------------------


@pytest.mark.parametrize(
    'size, resized, offsets',
    [
        # int(256 * 500 / 375) = 341; (341 - 224) / 2 = 58.5 rounds (half to even) to 58.
        ((375, 500), (256, 341), (16, 58)),
        # Portrait: int(256 * 375 / 250) = 384; (384 - 224) / 2 = 80.
        ((375, 250), (384, 256), (80, 16)),
        # Already 256 on the short side: no resampling; 59.5 rounds to 60.
        ((256, 343), (256, 343), (16, 60)),
        ((256, 341), (256, 341), (16, 58)),
        # 57.5 rounds to 58 (even); 256 x 256 crops at 16.
        ((256, 339), (256, 339), (16, 58)),
        ((300, 300), (256, 256), (16, 16)),
    ],
)
def test_resize_center_crop_offsets(size, resized, offsets):
  image = _smooth_image(*size)
  out = augment.resize_center_crop(image, 256, 224)
  assert out.shape == (224, 224, 3) and out.dtype == np.uint8
  pil = Image.fromarray(image)
  if pil.size != (resized[1], resized[0]):
    pil = pil.resize((resized[1], resized[0]), Image.Resampling.BILINEAR)
  top, left = offsets
  np.testing.assert_array_equal(out, np.asarray(pil)[top : top + 224, left : left + 224])


def test_resize_center_crop_pads_small_images():
  # resize=5 keeps a 5 x 7 image; a 8 x 8 crop pads rows (1, 2) and columns (0, 1)...
  image = _images((5, 7, 1))
  out = augment.resize_center_crop(image, resize=5, crop=8)
  expected = np.zeros((8, 8, 1), np.uint8)
  expected[1:6, 0:7] = image
  np.testing.assert_array_equal(out, expected)


# ----- random_crop_flip ------------------------------------------------------


def test_random_crop_flip_matches_explicit_slicing():
  rng_images = np.random.default_rng(0).integers(0, 256, (6, 5, 7, 2), dtype=np.uint8)
  out = augment.random_crop_flip(rng_images, np.random.default_rng(9), padding=2, flip=True)
  # Replay the same random draws by hand.
  rng = np.random.default_rng(9)
  dy, dx = rng.integers(0, 5, 6), rng.integers(0, 5, 6)
  flips = rng.random(6) < 0.5
  padded = np.pad(rng_images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(6):
    expected = padded[i, dy[i] : dy[i] + 5, dx[i] : dx[i] + 7]
    if flips[i]:
      expected = expected[:, ::-1]
    np.testing.assert_array_equal(out[i], expected)
  same = augment.random_crop_flip(rng_images, np.random.default_rng(0), padding=0, flip=False)
  np.testing.assert_array_equal(same, rng_images)


# ----- horizontal_flip -------------------------------------------------------


def test_horizontal_flip_probability_and_replay():
  n = 20000
  images = np.broadcast_to(np.array([0, 1], np.uint8)[None, None, :, None], (n, 1, 2, 1))
  for p in (0.0, 0.3, 0.5, 1.0):
    out = augment.horizontal_flip(images, np.random.default_rng(1), p)
    flipped = out[:, 0, 0, 0] == 1
    np.testing.assert_array_equal(flipped, np.random.default_rng(1).random(n) < p)
    assert abs(flipped.mean() - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-12
  batch = _images((16, 8, 8, 3))
  np.testing.assert_array_equal(
      augment.horizontal_flip(batch, np.random.default_rng(5)),
      augment.random_crop_flip(batch, np.random.default_rng(5), padding=0, flip=True),
  )


# ----- color_jitter ----------------------------------------------------------


def _jitter_reference(image, order, factors, ops, bound):
  """One image in float64, straight from the formulas."""
  x = image.astype(np.float64)
  for slot in order:
    op, f = ops[slot], factors[slot]
    gray = x @ np.array([0.299, 0.587, 0.114]) if x.shape[-1] == 3 else x[..., 0]
    if op == 'brightness':
      d = 0.0
    elif op == 'contrast':
      d = gray.mean()
    else:
      d = gray[..., None] if x.shape[-1] == 3 else x
    x = np.clip(f * x + (1 - f) * d, 0, bound)
  return x


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(brightness=0.4, contrast=0.4, saturation=0.4),
        dict(brightness=0.8, contrast=0.0, saturation=(0.2, 1.5)),
        dict(brightness=0.0, contrast=1.5, saturation=0.0),
    ],
)
@pytest.mark.parametrize('dtype', [np.uint8, np.float32])
def test_color_jitter_matches_formula(kwargs, dtype):
  images = _images((6, 9, 11, 3), seed=2)
  if dtype == np.float32:
    images = images.astype(np.float32) / 255
  out = augment.color_jitter(images, np.random.default_rng(7), **kwargs)
  assert out.dtype == dtype and out.shape == images.shape

  # Replay the documented draws.
  ranges = []
  for name in ('brightness', 'contrast', 'saturation'):
    v = kwargs[name]
    lo, hi = (max(0.0, 1 - v), 1 + v) if np.isscalar(v) else v
    if (lo, hi) != (1.0, 1.0):
      ranges.append((name, lo, hi))
  rng = np.random.default_rng(7)
  orders = rng.permuted(np.tile(np.arange(len(ranges)), (6, 1)), axis=1)
  factors = np.stack([rng.uniform(lo, hi, 6) for _, lo, hi in ranges], axis=1)
  ops = [name for name, _, _ in ranges]
  bound = 255.0 if dtype == np.uint8 else 1.0
  for i in range(6):
    expected = _jitter_reference(images[i], orders[i], factors[i], ops, bound)
    if dtype == np.uint8:
      assert np.abs(out[i].astype(np.float64) - expected).max() <= 0.5 + 1e-3
    else:
      np.testing.assert_allclose(out[i], expected, atol=2e-6)


def test_color_jitter_identity_and_grayscale_images():
  images = _images((4, 5, 6, 3))
  np.testing.assert_array_equal(
      augment.color_jitter(images, np.random.default_rng(0), 0, 0, 0), images
  )
  # A factor range of {1} for all three is the identity in float too.
  floats = images.astype(np.float32) / 255
  np.testing.assert_allclose(
      augment.color_jitter(floats, np.random.default_rng(0), (1, 1), (1, 1), (1, 1)), floats
  )
  # 1-channel images: saturation is the identity; contrast blends with the mean.
  gray = _images((3, 5, 6, 1))
  np.testing.assert_array_equal(
      augment.color_jitter(gray, np.random.default_rng(0), 0, 0, 0.9), gray
  )
  rng = np.random.default_rng(4)
  out = augment.color_jitter(gray, np.random.default_rng(4), 0, 0.5, 0)
  rng.permuted(np.zeros((3, 1), np.int64), axis=1)
  f = rng.uniform(0.5, 1.5, 3)
  x = gray.astype(np.float64)
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  expected = np.clip(f[:, None, None, None] * x + (1 - f[:, None, None, None]) * mean, 0, 255)
  assert np.abs(out - expected).max() <= 0.5 + 1e-3


def test_color_jitter_orders_are_random_and_deterministic():
  images = _images((32, 4, 4, 3))
  a = augment.color_jitter(images, np.random.default_rng(9))
  np.testing.assert_array_equal(a, augment.color_jitter(images, np.random.default_rng(9)))
  assert not np.array_equal(a, augment.color_jitter(images, np.random.default_rng(10)))
  orders = np.random.default_rng(9).permuted(np.tile(np.arange(3), (32, 1)), axis=1)
  assert len({tuple(o) for o in orders}) > 3  # Several of the 6 orders are used.


# ----- cutout ------------------------------------------------------------------


@pytest.mark.parametrize('length, holes', [(16, 1), (8, 3), (5, 2)])
def test_cutout_zeroes_the_clipped_squares(length, holes):
  b, h, w = 200, 32, 24
  images = np.ones((b, h, w, 3), np.float32) * np.arange(1, 4, dtype=np.float32)
  out = augment.cutout(images, np.random.default_rng(1), length=length, holes=holes)
  rng = np.random.default_rng(1)
  ys, xs = rng.integers(0, h, (b, holes)), rng.integers(0, w, (b, holes))
  half = length // 2
  saw_border = False
  for i in range(b):
    expected = images[i].copy()
    for y, x in zip(ys[i], xs[i]):
      y1, y2 = max(y - half, 0), min(y + half, h)
      x1, x2 = max(x - half, 0), min(x + half, w)
      expected[y1:y2, x1:x2] = 0
      saw_border |= (y2 - y1) * (x2 - x1) < (2 * half) ** 2
    np.testing.assert_array_equal(out[i], expected)
    if holes == 1:  # The count of zeroed pixels is the clipped area.
      (y,), (x,) = ys[i], xs[i]
      area = (min(y + half, h) - max(y - half, 0)) * (min(x + half, w) - max(x - half, 0))
      assert (out[i, :, :, 0] == 0).sum() == area
  assert saw_border  # Some squares were cut at the border.
  np.testing.assert_array_equal(images[:, :, :, 0], 1)  # Input untouched.


def test_cutout_small_image_fully_covered_and_uint8():
  # Any centre of a 4 x 4 image: rows [y - 8, y + 8) cover it all.
  images = _images((10, 4, 4, 3)) | 1
  out = augment.cutout(images, np.random.default_rng(0), length=16)
  assert out.dtype == np.uint8 and not out.any()
  # On normalised data the holes are exact zeros, everything else unchanged.
  norm = augment.normalize(_images((8, 32, 32, 3)), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  out = augment.cutout(norm, np.random.default_rng(0), length=16)
  changed = out != norm
  assert np.all(out[changed] == 0) and 0 < changed.mean() < 0.25


# ----- mixup -------------------------------------------------------------------


@pytest.mark.parametrize('alpha', [1.0, 0.2])
def test_mixup_replay(alpha):
  images = np.random.default_rng(0).normal(size=(16, 4, 4, 3)).astype(np.float32)
  labels = np.arange(16) % 5
  mixed, y_a, y_b, lam = augment.mixup(images, labels, np.random.default_rng(3), alpha)
  rng = np.random.default_rng(3)
  expected_lam = rng.beta(alpha, alpha)
  perm = rng.permutation(16)
  assert lam == pytest.approx(expected_lam, abs=0) and isinstance(lam, float)
  np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[perm], rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(y_a, labels)
  np.testing.assert_array_equal(y_b, labels[perm])
  assert mixed.dtype == np.float32


def test_mixup_off_is_identity():
  images = _images((8, 4, 4, 3))
  labels = np.arange(8)
  for alpha in (0.0, -1.0):
    mixed, y_a, y_b, lam = augment.mixup(images, labels, np.random.default_rng(0), alpha)
    assert lam == 1.0 and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed, images.astype(np.float32))
    np.testing.assert_array_equal(y_a, labels)
    np.testing.assert_array_equal(y_b, labels)


def test_mixup_lambda_distribution():
  images = np.zeros((2, 1, 1, 1), np.float32)
  rng = np.random.default_rng(0)
  lams = np.array([augment.mixup(images, np.arange(2), rng, 1.0)[3] for _ in range(4000)])
  assert abs(lams.mean() - 0.5) < 0.02 and abs(lams.var() - 1 / 12) < 0.01  # Uniform(0, 1).


# ----- AutoAugment ---------------------------------------------------------------


def test_cifar10_policy_table():
  policy = augment.CIFAR10_POLICY
  assert len(policy) == 25
  for subpolicy in policy:
    assert len(subpolicy) == 2
    for op, p, level in subpolicy:
      assert op in augment.AUTOAUGMENT_OPS
      assert 0.0 <= p <= 1.0 and isinstance(level, int) and 0 <= level <= 9
  used = {op for sub in policy for op, _, _ in sub}
  assert used == set(augment.AUTOAUGMENT_OPS) - {'ShearX'}  # The CIFAR-10 policy has no ShearX.
  # Spot checks of the published table.
  assert policy[0] == (('Invert', 0.1, 7), ('Contrast', 0.2, 6))
  assert policy[24] == (('TranslateY', 0.7, 9), ('AutoContrast', 0.9, 1))


def test_autoaugment_magnitudes():
  mag = augment.autoaugment_magnitude
  assert mag('ShearY', 9) == pytest.approx(0.3) and mag('ShearY', 0) == 0
  assert mag('TranslateX', 9) == pytest.approx(150 / 331)
  assert mag('Rotate', 2) == pytest.approx(30 * 2 / 9)
  assert mag('Color', 9) == pytest.approx(0.9)
  assert [mag('Posterize', k) for k in range(10)] == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]
  assert mag('Solarize', 0) == 256 and mag('Solarize', 9) == 0
  assert mag('Solarize', 2) == pytest.approx(256 * 7 / 9)
  assert mag('Invert', 3) is None and mag('Equalize', 0) is None


def test_autoaugment_ops_against_formulas():
  image = _images((32, 32, 3), seed=4)
  op = augment.autoaugment_op
  np.testing.assert_array_equal(op(image, 'Invert', None), 255 - image)
  np.testing.assert_array_equal(
      op(image, 'Solarize', 128.0), np.where(image >= 128, 255 - image, image)
  )
  np.testing.assert_array_equal(op(image, 'Posterize', 5), image & 0b11111000)
  np.testing.assert_array_equal(op(image, 'Brightness', 0.0), image)
  np.testing.assert_array_equal(op(image, 'Brightness', -1.0), 0)
  # Integer translation by +4 px reads x_in = x + 4: shifts content left, gray fill.
  shifted = op(image, 'TranslateX', 4 / 32)
  np.testing.assert_array_equal(shifted[:, :28], image[:, 4:])
  np.testing.assert_array_equal(shifted[:, 28:], 128)
  shifted = op(image, 'TranslateY', -4 / 32)
  np.testing.assert_array_equal(shifted[4:], image[:28])
  np.testing.assert_array_equal(shifted[:4], 128)
  # Rotating by 0 and shearing by 0 are identities; rotating a square by 90
  # degrees counter-clockwise is np.rot90.
  np.testing.assert_array_equal(op(image, 'Rotate', 0.0), image)
  np.testing.assert_array_equal(op(image, 'ShearX', 0.0), image)
  np.testing.assert_array_equal(op(image, 'Rotate', 90.0), np.rot90(image))
  # AutoContrast stretches each channel to [0, 255].
  low = (image // 4 + 10).astype(np.uint8)
  stretched = op(low, 'AutoContrast', None)
  assert stretched.min() == 0 and stretched.max() == 255
  gray = _images((8, 8, 1))
  assert op(gray, 'ShearY', 0.3).shape == (8, 8, 1)


def test_apply_subpolicy_probabilities_and_sign():
  image = _images((8, 8, 3))
  sub = (('Invert', 1.0, 0), ('Invert', 0.0, 0))
  np.testing.assert_array_equal(
      augment.apply_subpolicy(image, sub, np.random.default_rng(0)), 255 - image
  )
  sub = (('Invert', 1.0, 0), ('Invert', 1.0, 0))
  np.testing.assert_array_equal(
      augment.apply_subpolicy(image, sub, np.random.default_rng(0)), image
  )
  # TranslateX at level 9 moves by 150/331 * 8 = 3.6 px, sign from the second draw.
  sub = (('TranslateX', 1.0, 9),)
  for seed in range(6):
    rng = np.random.default_rng(seed)
    rng.random()
    sign = 1 if rng.random() < 0.5 else -1
    expected = augment.autoaugment_op(image, 'TranslateX', sign * 150 / 331)
    np.testing.assert_array_equal(
        augment.apply_subpolicy(image, sub, np.random.default_rng(seed)), expected
    )
    # Rotate is unsigned, as in the DeepVoltaire policy DDC / CC-SAM use: +30 degrees.
    np.testing.assert_array_equal(
        augment.apply_subpolicy(image, (('Rotate', 1.0, 9),), np.random.default_rng(seed)),
        augment.autoaugment_op(image, 'Rotate', 30.0),
    )


def test_auto_augment_cifar10_shape_dtype_determinism():
  images = _images((40, 32, 32, 3), seed=6)
  outs = [augment.auto_augment_cifar10(im, np.random.default_rng(i)) for i, im in enumerate(images)]
  for i, (image, out) in enumerate(zip(images, outs)):
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    again = augment.auto_augment_cifar10(image, np.random.default_rng(i))
    np.testing.assert_array_equal(out, again)
    # Same as applying the replayed sub-policy.
    rng = np.random.default_rng(i)
    sub = augment.CIFAR10_POLICY[rng.integers(25)]
    np.testing.assert_array_equal(out, augment.apply_subpolicy(image, sub, rng))
  assert sum(not np.array_equal(o, im) for o, im in zip(outs, images)) > 10
  assert augment.auto_augment_cifar10(
      Image.fromarray(images[0]), np.random.default_rng(0)
  ).shape == (32, 32, 3)


# ----- recipes -----------------------------------------------------------------


def test_cifar_recipe_order():
  images = _images((8, 32, 32, 3), seed=8)
  mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
  out = augment.cifar_autoaugment_cutout(images, np.random.default_rng(0), mean=mean, std=std)
  rng = np.random.default_rng(0)
  x = augment.random_crop_flip(images, rng, padding=4, flip=True)
  x = np.stack([augment.auto_augment_cifar10(im, rng) for im in x])
  x = augment.cutout(x, rng, length=16)
  np.testing.assert_array_equal(out, augment.normalize(x, mean, std))
  assert out.dtype == np.float32
  # Holes are black pixels: (0 - mean) / std after normalisation.
  black = np.all(np.isclose(out, -np.array(mean) / np.array(std), atol=1e-6), axis=-1)
  assert black.sum(axis=(1, 2)).min() >= 8 * 8


def test_large_scale_recipe_order():
  images = _images((4, 16, 16, 3), seed=9)
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  out = augment.large_scale_train_batch(images, np.random.default_rng(1), mean=mean, std=std)
  rng = np.random.default_rng(1)
  x = augment.color_jitter(augment.horizontal_flip(images, rng), rng)
  np.testing.assert_array_equal(out, augment.normalize(x, mean, std))
  out = augment.large_scale_train_batch(
      images, np.random.default_rng(1), mean=mean, std=std, jitter=False
  )
  x = augment.horizontal_flip(images, np.random.default_rng(1))
  np.testing.assert_array_equal(out, augment.normalize(x, mean, std))
