"""Tests for ltjax.data.dali_decode (config.data.decoder='dali') on DALI's CPU backend.

DALI's decoder and resize differ from Pillow's; the boxes, flips and jitter draws must be the
Pillow path's exactly, the crops within a few grey levels of it on photo-like (smooth) images.
"""

import os

from helpers import write_list_folder
import ml_collections
import numpy as np
from PIL import Image
import pytest

from ltjax import data
from ltjax.data import augment
from ltjax.data import batch_keys
from ltjax.data import listfile
from ltjax.data import records
from ltjax.train import config_check

pytest.importorskip('nvidia.dali')

from ltjax.data import dali_decode  # pylint: disable=g-import-not-at-top,wrong-import-position

DATASET = 'places_lt'
SIZE = 24


def smooth(rng, height, width):
  """A photo-like image: smooth gradients, which JPEG keeps within a few grey levels."""
  small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
  return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('places'))
  write_list_folder(root, DATASET, {'train': 1}, np.random.default_rng(0), max_eval=40)
  rng = np.random.default_rng(1)
  for i in range(8):  # Larger, smooth images in place of the helper's random ones.
    Image.fromarray(smooth(rng, 60 + 7 * i, 90 - 5 * i)).save(
        os.path.join(root, 'images', f'img_{i}.jpg'), quality=95
    )
  return root


def batches(source, decoder, batch_size=16, **kwargs):
  return data.TrainBatches(
      source,
      global_batch_size=batch_size,
      seed=5,
      augment='imagenet',
      image_size=SIZE,
      device_augment=True,
      decoder=decoder,
      **kwargs,
  )


def test_dali_crops_match_pillows_with_the_same_draws(folder):
  source = listfile.load_list_split(DATASET, 'train', root=folder)
  pillow, dali = batches(source, 'pillow'), batches(source, 'dali')
  decode = dali_decode.DaliCropDecoder(SIZE, 16, device='cpu', num_threads=2)
  for step in (0, 7):
    want, host = pillow.batch(step), dali.batch(step)
    assert len(host[batch_keys.ENCODED]) == 16 and host[batch_keys.CROP].shape == (16, 4)
    # The boxes are the Pillow path's draws: redraw them from the same generator.
    rng = np.random.default_rng([5, 1, step, 0])
    for i, index in enumerate(pillow.indices(step)):
      height, width = source[int(index)]['image'].shape[:2]
      box = augment.random_resized_crop_params(height, width, rng)
      np.testing.assert_array_equal(host[batch_keys.CROP][i], box)
    got = decode(host)
    assert set(got) == set(want) and batch_keys.ENCODED not in got
    for key in (
        batch_keys.LABEL,
        batch_keys.FLIP,
        batch_keys.JITTER_OPS,
        batch_keys.JITTER_FACTORS,
    ):
      np.testing.assert_array_equal(got[key], want[key])
    assert got[batch_keys.IMAGE].dtype == np.uint8
    assert got[batch_keys.IMAGE].shape == want[batch_keys.IMAGE].shape == (16, SIZE, SIZE, 3)
    diff = np.abs(got[batch_keys.IMAGE].astype(int) - want[batch_keys.IMAGE].astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 3, (diff.mean(), diff.max())  # Now: 0.16, 2.


def test_jpeg_records_feed_dali_the_original_files(folder, tmp_path):
  """Records that kept the original JPEG bytes decode exactly as the files do."""
  source = listfile.load_list_split(DATASET, 'train', root=folder)
  records.prepare_split(
      source,
      str(tmp_path),
      dataset=DATASET,
      split='train',
      options=records.PrepareOptions(image_format='jpeg', shorter_side=0),
  )
  prepared = records.load_records_split(str(tmp_path), DATASET, 'train')
  decode = dali_decode.DaliCropDecoder(SIZE, 16, device='cpu', num_threads=2)
  a = decode(batches(source, 'dali').batch(3))
  b = decode(batches(prepared, 'dali').batch(3))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_misuses_are_named(folder, tmp_path):
  source = listfile.load_list_split(DATASET, 'train', root=folder)
  with pytest.raises(ValueError, match="decoder='dali'.*device_augment=True"):
    batches(source, 'dali', mixup_alpha=0.2)
  with pytest.raises(ValueError, match="Unknown data.decoder 'nvjpeg'"):
    batches(source, 'nvjpeg')
  records.prepare_split(
      source, str(tmp_path), dataset=DATASET, split='train', options=records.PrepareOptions()
  )
  raw = records.load_records_split(str(tmp_path), DATASET, 'train')
  with pytest.raises(records.RecordsError, match='raw pixels.*--format=jpeg'):
    batches(raw, 'dali').batch(0)
  config = ml_collections.ConfigDict({'data': {'decoder': 'dali', 'skip_corrupt': True}})
  with pytest.raises(ValueError, match='cannot skip unreadable images'):
    config_check.check_values(_valid(config))


def _valid(config):
  """A config that passes every other check of check_values."""
  from configs import ce_places_lt  # pylint: disable=g-import-not-at-top

  full = ce_places_lt.get_config()
  full.data.decoder, full.data.skip_corrupt = config.data.decoder, config.data.skip_corrupt
  full.batch_size = 8
  return full


def test_a_recipe_trains_with_dali(folder, tmp_path):
  from test_recipe_runs import small_run  # pylint: disable=g-import-not-at-top

  from configs import ce_places_lt  # pylint: disable=g-import-not-at-top
  from ltjax import train  # pylint: disable=g-import-not-at-top

  config = small_run(ce_places_lt.get_config())
  config.data.data_dir, config.data.decoder, config.data.num_workers = folder, 'dali', 0
  config.model.pretrained = ''
  config.stage2.num_epochs = 0
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2 and np.isfinite(results['accuracy'])
