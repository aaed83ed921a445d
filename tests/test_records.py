"""Tests for ltjax.data.records and ``python -m ltjax.prepare``: prepared records of list-file data.

A Places-LT-style folder of real JPEGs (sizes 20x16 to 41x30) stands in for the data set; a
shorter side of 18 resizes about half of them, so both the resized and the kept-as-is paths run.
"""

import os
import pickle
import subprocess
import sys

from helpers import REPO
from helpers import write_list_folder
import ml_collections
import numpy as np
import pytest

from ltjax import data
from ltjax.data import augment
from ltjax.data import datasets
from ltjax.data import listfile
from ltjax.data import records

DATASET = 'places_lt'
SIDE = 18


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('places')
  return str(write_list_folder(root, DATASET, {'train': 1}, np.random.default_rng(0), max_eval=40))


def source_of(folder, split='train', **kwargs):
  return listfile.load_list_split(DATASET, split, root=folder, **kwargs)


def prepare(folder, out, split='train', source=None, stop_after_shards=None, **options):
  options.setdefault('shorter_side', SIDE)
  options.setdefault('images_per_shard', 100)
  return records.prepare_split(
      source or source_of(folder, split),
      str(out),
      dataset=DATASET,
      split=split,
      options=records.PrepareOptions(**options),
      stop_after_shards=stop_after_shards,
  )


def expected_image(image: np.ndarray, side: int) -> np.ndarray:
  if side and min(image.shape[:2]) > side:
    return np.asarray(augment.resize_shorter(image, side))
  return image


@pytest.fixture(scope='module')
def prepared(folder, tmp_path_factory):
  out = tmp_path_factory.mktemp('records')
  meta = prepare(folder, out)
  return out, meta


def test_records_are_the_resized_images_in_list_order(folder, prepared):
  out, meta = prepared
  source = source_of(folder)
  prepared_source = records.load_records_split(str(out), DATASET, 'train')
  assert len(prepared_source) == len(source) == meta['num_records'] == 365
  assert (
      meta['num_shards'] == 4 and len(os.listdir(out / 'train')) == 4 + 4 + 3
  )  # + plan, meta, labels.
  np.testing.assert_array_equal(prepared_source.labels, source.labels)
  assert meta['label_histogram'] == np.bincount(source.labels, minlength=365).tolist()
  assert prepared_source.class_names == source.class_names
  assert (prepared_source.mean, prepared_source.std) == (source.mean, source.std)
  resized = 0
  for i in range(0, len(source), 7):
    original = source[i]['image']
    record = prepared_source[i]
    np.testing.assert_array_equal(record['image'], expected_image(original, SIDE))
    assert record['label'] == source.labels[i]
    resized += min(original.shape[:2]) > SIDE
  assert 0 < resized < len(range(0, len(source), 7))


def test_raw_records_give_the_test_transform_bit_for_bit(folder, prepared):
  """Resize(S) + CenterCrop of a record = of the original, when S is the prepared side."""
  out, _ = prepared
  source, prepared_source = source_of(folder), records.load_records_split(
      str(out), DATASET, 'train'
  )
  for i in range(8):
    np.testing.assert_array_equal(
        augment.resize_center_crop(prepared_source[i]['image'], resize=SIDE, crop=16),
        augment.resize_center_crop(source[i]['image'], resize=SIDE, crop=16),
    )


def test_jpeg_records_keep_unresized_files_and_reencode_the_rest(folder, tmp_path):
  meta = prepare(folder, tmp_path, image_format='jpeg', jpeg_quality=95)
  source, prepared_source = source_of(folder), records.load_records_split(
      str(tmp_path), DATASET, 'train'
  )
  for i in range(8):
    original, stored = source[i]['image'], prepared_source[i]['image']
    if min(original.shape[:2]) <= SIDE:  # The original file's bytes: the same decode.
      np.testing.assert_array_equal(stored, original)
    else:
      want = expected_image(original, SIDE).astype(int)
      assert stored.shape == want.shape
      assert np.abs(stored.astype(int) - want).mean() < 12  # Random pixels: JPEG's worst case.
  assert meta['image_format'] == 'jpeg'


def test_interrupted_prepare_resumes_to_the_same_records(folder, prepared, tmp_path):
  out, _ = prepared
  assert prepare(folder, tmp_path, stop_after_shards=2) is None
  with pytest.raises(records.RecordsError, match='unfinished.*rerun the same command'):
    records.load_records_split(str(tmp_path), DATASET, 'train')
  first = {n: os.stat(tmp_path / 'train' / n).st_mtime_ns for n in os.listdir(tmp_path / 'train')}
  assert sum(n.startswith('train.array_record') for n in first) == 2
  prepare(folder, tmp_path)
  for name, mtime in first.items():  # Finished shards are not written again.
    if name.startswith('train.array_record'):
      assert os.stat(tmp_path / 'train' / name).st_mtime_ns == mtime
  for name in os.listdir(out / 'train'):  # The same bytes as an uninterrupted prepare.
    if name.startswith('train.array_record') or name == records.LABELS:
      assert (tmp_path / 'train' / name).read_bytes() == (out / 'train' / name).read_bytes()


def test_a_partial_shard_is_written_again(folder, prepared, tmp_path):
  prepare(folder, tmp_path, stop_after_shards=1)
  name = records.shard_name('train', 1, 4)
  (tmp_path / 'train' / (name + '.partial')).write_bytes(b'cut short by a preemption')
  prepare(folder, tmp_path)
  assert not os.path.exists(tmp_path / 'train' / (name + '.partial'))
  assert (tmp_path / 'train' / name).read_bytes() == (prepared[0] / 'train' / name).read_bytes()


def test_other_options_in_the_same_directory_are_refused(folder, tmp_path):
  prepare(folder, tmp_path, stop_after_shards=1)
  with pytest.raises(
      records.RecordsError, match="prepared differently.*'image_format': \\('raw', 'jpeg'\\)"
  ):
    prepare(folder, tmp_path, image_format='jpeg')


def test_verify_reads_every_record_back(folder, prepared, tmp_path):
  out, _ = prepared
  assert records.verify(str(out), 'train')['num_records'] == 365
  copy = tmp_path / 'copy'
  copy.mkdir()
  os.system(f'cp -r {out}/train {copy}/')
  shards = [records.shard_name('train', s, 4) for s in range(4)]
  # A shard replaced by another one: same size, other labels.
  (copy / 'train' / shards[1]).write_bytes((copy / 'train' / shards[0]).read_bytes())
  with pytest.raises(records.RecordsError, match=f'{shards[1]}: its records do not match'):
    records.verify(str(copy), 'train')
  os.remove(copy / 'train' / shards[2])
  (copy / 'train' / shards[1]).write_bytes((out / 'train' / shards[1]).read_bytes())
  with pytest.raises(records.RecordsError, match=f'{shards[2]} is missing'):
    records.verify(str(copy), 'train')


def test_unreadable_image_fails_or_is_replaced_as_the_list_source_does(folder, tmp_path):
  broken = tmp_path / 'broken'
  os.system(f'cp -r {folder} {broken}')
  path = listfile.load_list_split(DATASET, 'train', root=str(broken)).path(3)
  with open(path, 'r+b') as f:
    f.truncate(40)
  with pytest.raises(listfile.UnreadableImageError, match='skip_corrupt'):
    prepare(str(broken), tmp_path / 'strict')
  skipping = source_of(str(broken), skip_corrupt=True)
  meta = prepare(str(broken), tmp_path / 'lenient', source=skipping)
  replaced = [r for r in meta['replaced'] if r[0] == 3]
  assert replaced and replaced[0][1] == 4 and replaced[0][2] == path
  prepared_source = records.load_records_split(str(tmp_path / 'lenient'), DATASET, 'train')
  np.testing.assert_array_equal(
      prepared_source[3]['image'], expected_image(skipping[3]['image'], SIDE)
  )
  assert prepared_source.labels[3] == skipping[3]['label'] == skipping.labels[4]


def test_pickled_subset_reads_in_another_process_state(prepared):
  out, _ = prepared
  prepared_source = records.load_records_split(str(out), DATASET, 'train')
  prepared_source[0]  # Opens the reader, which must not be pickled.
  subset = pickle.loads(pickle.dumps(prepared_source.subset(np.array([10, 3, 200]))))
  assert len(subset) == 3
  np.testing.assert_array_equal(subset.labels, prepared_source.labels[[10, 3, 200]])
  np.testing.assert_array_equal(subset[2]['image'], prepared_source[200]['image'])
  np.testing.assert_array_equal(
      subset.subset(np.array([2]))[0]['image'], prepared_source[200]['image']
  )


def test_full_size_records_give_the_list_sources_batches(folder, tmp_path):
  """shorter_side=0: the batch of every step from records = from the JPEG files (device_augment)."""
  prepare(folder, tmp_path, shorter_side=0)
  kwargs = dict(
      global_batch_size=16, seed=3, augment='imagenet', image_size=12, device_augment=True
  )
  from_files = data.TrainBatches(source_of(folder), **kwargs)
  from_records = data.TrainBatches(
      records.load_records_split(str(tmp_path), DATASET, 'train'), **kwargs
  )
  for step in (0, 5, 30):
    a, b = from_files.batch(step), from_records.batch(step)
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def data_config(folder, records_dir=''):
  return ml_collections.ConfigDict(
      {
          'name': DATASET,
          'data_dir': folder,
          'list_dir': '',
          'records_dir': records_dir,
          'skip_corrupt': False,
          'imbalance_ratio': 0,
          'n_max': 0,
          'profile': 'exp',
          'selection': 'shuffle',
          'subsample_seed': 0,
          'val_per_class': 0,
          'open_classes': (),
          'open_list': '',
      }
  )


def test_records_dir_replaces_the_image_files(folder, tmp_path):
  for split in ('train', 'val', 'test'):
    prepare(folder, tmp_path, split=split)
  from_files = datasets.load_datasets(data_config(folder))
  from_records = datasets.load_datasets(data_config(folder, str(tmp_path)))
  for name in ('train', 'val', 'test'):
    assert isinstance(getattr(from_records, name), records.RecordsSource)
    np.testing.assert_array_equal(
        getattr(from_records, name).labels, getattr(from_files, name).labels
    )
  np.testing.assert_array_equal(from_records.train_counts, from_files.train_counts)


def test_records_of_another_list_or_data_set_are_refused(folder, tmp_path):
  with pytest.raises(
      records.RecordsError, match='does not exist: prepare it.*python -m ltjax.prepare'
  ):
    datasets.load_datasets(data_config(folder, str(tmp_path)))
  changed = tmp_path / 'changed'
  os.system(f'cp -r {folder} {changed}')
  prepare(str(changed), tmp_path / 'r', split='train')
  with pytest.raises(records.RecordsError, match='holds places_lt records, not imagenet_lt'):
    records.load_records_split(str(tmp_path / 'r'), 'imagenet_lt', 'train')
  train_list = listfile.split_file(DATASET, 'train', str(changed))
  with open(train_list, 'a') as f:
    f.write('images/img_0.jpg 0\n')
  with pytest.raises(records.RecordsError, match='another version of the list file'):
    records.load_records_split(str(tmp_path / 'r'), DATASET, 'train', list_file=train_list)
  with pytest.raises(records.RecordsError, match='is a URL.*FUSE'):
    records.load_records_split('gs://bucket/records', DATASET, 'train')


def run_prepare(*args):
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  return subprocess.run(
      [sys.executable, '-m', 'ltjax.prepare', *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=REPO,
      timeout=300,
  )


def test_prepare_command_writes_every_split_in_workers_and_verifies(folder, tmp_path):
  args = [
      '--config=configs/ce_places_lt.py',
      f'--config.data.data_dir={folder}',
      f'--records_dir={tmp_path}',
      '--shorter_side=18',
      '--images_per_shard=64',
      '--workers=2',
  ]
  result = run_prepare(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'--config.data.records_dir={tmp_path}' in result.stdout
  assert sorted(os.listdir(tmp_path)) == ['test', 'train', 'val']
  assert records.load_records_split(str(tmp_path), DATASET, 'train').meta['num_shards'] == 6
  assert '365/365 images' in result.stderr  # Progress as log lines off a terminal.
  result = run_prepare(*args, '--verify')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'train: 365 records verified' in result.stderr
  result = run_prepare(*args[:-2], '--format=jpeg')  # Same directory, other options.
  assert result.returncode == 2
  assert 'prepared differently' in result.stderr


def test_prepare_command_refuses_in_memory_data_sets(tmp_path):
  result = run_prepare('--config=configs/default.py', f'--records_dir={tmp_path}')
  assert result.returncode != 0
  assert 'not a list-file data set' in result.stderr
  assert not os.listdir(tmp_path)


def test_training_from_full_size_records_equals_training_from_the_files(folder, tmp_path):
  """The ce_places_lt recipe (small CNN, two steps): records at full size change no number."""
  from test_recipe_runs import small_run  # pylint: disable=g-import-not-at-top

  from configs import ce_places_lt  # pylint: disable=g-import-not-at-top
  from ltjax import train  # pylint: disable=g-import-not-at-top

  for split in ('train', 'val', 'test'):
    prepare(folder, tmp_path / 'records', split=split, shorter_side=0)
  results = {}
  for name, records_dir in (('files', ''), ('records', str(tmp_path / 'records'))):
    config = small_run(ce_places_lt.get_config())
    config.data.data_dir, config.data.records_dir = folder, records_dir
    config.data.num_workers = 0
    config.model.pretrained = ''
    config.stage2.num_epochs = 0
    _, results[name] = train.train_and_evaluate(config, str(tmp_path / name))
  assert results['records']['accuracy'] == results['files']['accuracy']
  np.testing.assert_array_equal(
      results['records']['per_class_accuracy'], results['files']['per_class_accuracy']
  )


def test_prepare_writes_the_splits_training_reads():
  """iNaturalist 2018 tests on its validation list: its records are 'train' and 'test'."""
  assert listfile.distinct_splits('inat2018') == ['train', 'test']
  assert listfile.distinct_splits(DATASET) == ['train', 'test', 'val']
