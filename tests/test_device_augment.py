"""ltjax.data.device_augment: the large-scale transform's flip, jitter and
normalisation in the train step equal the host's (``augment.large_scale_train_batch``)."""

import os

import jax
import numpy as np
import pytest

from helpers import write_places_folder
from ltjax.data import augment
from ltjax.data import batch_keys
from ltjax.data import device_augment
from ltjax.data import listfile
from ltjax.data import pipeline

MEAN, STD = listfile.IMAGENET_MEAN, listfile.IMAGENET_STD
# The host rounds the jittered image to uint8 before normalising: half a grey level.
ROUNDING = 0.5 / 255 / min(STD) + 1e-5


def device(images, rng, jitter, mean=MEAN, std=STD):
  flips = augment.flip_draws(len(images), rng)
  ops, factors = augment.color_jitter_params(len(images), rng, *(3 * (0.4 if jitter else 0,)))
  batch = {
      batch_keys.IMAGE: images,
      batch_keys.LABEL: np.zeros(len(images), np.int32),
      batch_keys.FLIP: flips,
      batch_keys.JITTER_OPS: ops,
      batch_keys.JITTER_FACTORS: factors,
  }
  out = jax.jit(lambda b: device_augment.apply(b, mean, std))(batch)
  assert set(out) == {batch_keys.IMAGE, batch_keys.LABEL}
  return np.asarray(out[batch_keys.IMAGE])


@pytest.mark.parametrize('jitter', [True, False])
def test_the_device_transform_equals_the_host_transform(jitter):
  images = np.random.default_rng(0).integers(0, 256, (16, 20, 24, 3), dtype=np.uint8)
  host = augment.large_scale_train_batch(
      images, np.random.default_rng(5), mean=MEAN, std=STD, jitter=jitter
  )
  got = device(images, np.random.default_rng(5), jitter)
  np.testing.assert_allclose(got, host, atol=ROUNDING if jitter else 1e-5)
  if jitter:  # The jitter did change the images (the comparison is not trivially flip-only).
    plain = augment.large_scale_train_batch(
        images, np.random.default_rng(5), mean=MEAN, std=STD, jitter=False
    )
    assert np.abs(host - plain).max() > 0.5


def test_one_channel_images_get_brightness_and_contrast_only_as_on_the_host():
  images = np.random.default_rng(1).integers(0, 256, (8, 12, 12, 1), dtype=np.uint8)
  host = augment.large_scale_train_batch(
      images, np.random.default_rng(2), mean=(0.5,), std=(0.25,), jitter=True
  )
  got = device(images, np.random.default_rng(2), True, mean=(0.5,), std=(0.25,))
  np.testing.assert_allclose(got, host, atol=0.5 / 255 / 0.25 + 1e-5)


@pytest.mark.parametrize('augment_name', ['imagenet', 'inat'])
def test_train_batches_send_uint8_crops_and_the_same_draws(tmp_path, augment_name):
  root = str(tmp_path)
  write_places_folder(root, 4, {'train': 8, 'val': 1, 'test': 1}, np.random.default_rng(0))
  source = listfile.ListFileSource(
      root,
      os.path.join(root, listfile.SPLITS['places_lt'].files['train']),
      num_classes=4,
      mean=MEAN,
      std=STD,
  )
  make = lambda on: pipeline.TrainBatches(
      source, global_batch_size=8, seed=3, augment=augment_name, image_size=16, device_augment=on
  )
  on, off = make(True), make(False)
  for step in (0, 3):
    sent = on.batch(step)
    assert sent[batch_keys.IMAGE].dtype == np.uint8 and sent[batch_keys.IMAGE].shape == (
        8,
        16,
        16,
        3,
    )
    assert sent[batch_keys.JITTER_OPS].shape == (8, 3 if augment_name == 'imagenet' else 0)
    host = off.batch(step)
    got = np.asarray(device_augment.apply(sent, MEAN, STD)[batch_keys.IMAGE])
    np.testing.assert_allclose(got, host[batch_keys.IMAGE], atol=ROUNDING)
    np.testing.assert_array_equal(sent[batch_keys.LABEL], host[batch_keys.LABEL])
    for key, value in on.batch(step).items():  # A pure function of the step.
      np.testing.assert_array_equal(value, sent[key])
  # With mixup (which mixes normalised images) the host path stays.
  mixed = pipeline.TrainBatches(
      source,
      global_batch_size=8,
      seed=3,
      augment=augment_name,
      image_size=16,
      device_augment=True,
      mixup_alpha=0.2,
  )
  assert not mixed.device_augment and mixed.batch(0)[batch_keys.IMAGE].dtype == np.float32
