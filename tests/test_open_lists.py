"""OLTR's open-set lists (config.data.open_list) and mini-ImageNet-LT's list files.

The stand-ins are written in the real formats: ImageNet-LT's open list has lines
``ILSVRC2010_val_<8 digits>.JPEG -1`` naming files directly in the folder
``ImageNet_LT_open/`` beside it; mini-ImageNet-LT's lists name ImageNet train files
``<wnid>_<n>.JPEG <label>`` without their class folder.
"""

import io
import os
import pickle
import shutil

import numpy as np
from PIL import Image
import pytest

from configs import base
from helpers import write_places_folder
from ltjax import data
from ltjax import train
from ltjax.data import datasets
from ltjax.data import listfile
from ltjax.data import longtail
from ltjax.train import workdir_report

NUM_OPEN = 6


def smooth_image(i: int, h: int, w: int) -> np.ndarray:
  """An (h, w, 3) image JPEG keeps within a few levels: a colour plus gentle ramps."""
  colour = np.random.default_rng(i).integers(40, 200, 3)
  ramp = np.add.outer(np.arange(h) * 2, np.arange(w))[..., None]
  return (colour + ramp).clip(0, 255).astype(np.uint8)


def open_name(i: int) -> str:
  return f'ILSVRC2010_val_{1000 + 37 * i:08d}.JPEG'


@pytest.fixture(scope='module')
def imagenet_lt(tmp_path_factory):
  """An ImageNet-LT stand-in: images under data/, split files and OLTR's open list in lists/.

  The closed lists cover all 1000 classes over a few JPEGs (paths repeat); the open
  list names NUM_OPEN JPEGs of their own sizes in lists/ImageNet_LT_open/.
  """
  root = tmp_path_factory.mktemp('imagenet_lt')
  data_dir, lists = root / 'data', root / 'lists'
  files = []
  for c in range(4):
    os.makedirs(data_dir / 'train' / f'n0000{c}')
    relpath = f'train/n0000{c}/n0000{c}_{c}.JPEG'
    Image.fromarray(smooth_image(c, 18, 22)).save(data_dir / relpath, quality=95)
    files.append(relpath)
  os.makedirs(lists / 'ImageNet_LT_open')
  for split, per_class in (('train', 2), ('val', 1), ('test', 1)):
    labels = np.tile(np.arange(1000), per_class)
    lines = [f'{files[j % len(files)]} {label}' for j, label in enumerate(labels)]
    (lists / f'ImageNet_LT_{split}.txt').write_text('\n'.join(lines) + '\n')
  images = {}
  for i in range(NUM_OPEN):
    images[open_name(i)] = smooth_image(100 + i, 16 + 2 * i, 24 - i)
    Image.fromarray(images[open_name(i)]).save(
        lists / 'ImageNet_LT_open' / open_name(i), format='JPEG', quality=95
    )
  (lists / 'ImageNet_LT_open.txt').write_text(
      ''.join(f'{open_name(i)} -1\n' for i in range(NUM_OPEN))
  )
  return data_dir, lists, images


def imagenet_lt_config(data_dir, lists, **overrides):
  config = base.get_config().data
  config.name = 'imagenet_lt'
  config.data_dir = str(data_dir)
  config.list_dir = str(lists)
  config.imbalance_ratio = 0.0
  config.update(overrides)
  return config


def test_oltr_open_list_is_the_open_test_split(imagenet_lt, caplog):
  data_dir, lists, images = imagenet_lt
  splits = data.load_datasets(imagenet_lt_config(data_dir, lists, open_list='oltr'))
  open_test = splits.open_test
  assert isinstance(open_test, listfile.ListFileSource) and open_test.open_set
  assert 'the published open-set list has 18000' in caplog.text  # A warning only.
  # Beside the closed splits, which keep all 1000 classes.
  assert len(open_test) == NUM_OPEN and len(splits.test) == 1000 and len(splits.val) == 1000
  assert open_test.num_classes == splits.train.num_classes == 1000
  assert open_test.class_names == splits.train.class_names
  assert open_test.mean == listfile.IMAGENET_MEAN and open_test.std == listfile.IMAGENET_STD
  np.testing.assert_array_equal(open_test.labels, -1)
  assert open_test.labels.dtype == np.int32
  for i in range(NUM_OPEN):
    assert open_test.path(i) == os.path.join(str(lists), 'ImageNet_LT_open', open_name(i))
    record = open_test[i]
    assert record['label'] == -1
    error = np.abs(record['image'].astype(int) - images[open_name(i)].astype(int))
    assert record['image'].shape == images[open_name(i)].shape and error.mean() < 2
  # Subsets and pickles (grain workers) stay open-set sources.
  sub = pickle.loads(pickle.dumps(open_test.subset(np.array([4, 1]))))
  assert sub.open_set and sub.path(0) == open_test.path(4) and sub[1]['label'] == -1
  np.testing.assert_array_equal(sub[0]['image'], open_test[4]['image'])
  # The evaluation pipeline batches it like the test split (here: one image).
  batch, labels = data.pipeline.load_images(open_test, np.array([2]))
  assert batch.shape == (1, *images[open_name(2)].shape) and labels.tolist() == [-1]


def test_open_list_path_and_open_dir(imagenet_lt, tmp_path):
  data_dir, lists, images = imagenet_lt
  # A list of one's own, relative to list_dir: its images beside it, in the folder of its name.
  os.makedirs(lists / 'mine')
  Image.fromarray(images[open_name(0)]).save(lists / 'mine' / 'a.jpg', quality=95)
  (lists / 'mine.txt').write_text('a.jpg -1\na.jpg 1000\n')  # Labels >= C are unseen too.
  splits = data.load_datasets(imagenet_lt_config(data_dir, lists, open_list='mine.txt'))
  assert len(splits.open_test) == 2 and splits.open_test.labels.tolist() == [-1, -1]
  assert splits.open_test.path(1) == os.path.join(str(lists), 'mine', 'a.jpg')
  # An absolute list path and images elsewhere (open_dir).
  elsewhere = tmp_path / 'images'
  shutil.copytree(lists / 'ImageNet_LT_open', elsewhere)
  config = imagenet_lt_config(
      data_dir, lists, open_list=str(lists / 'ImageNet_LT_open.txt'), open_dir=str(elsewhere)
  )
  open_test = data.load_datasets(config).open_test
  assert len(open_test) == NUM_OPEN and open_test.path(3) == str(elsewhere / open_name(3))
  # The list may sit in data_dir when list_dir is '' (the split files' default place).
  assert listfile.open_list_paths('places_lt', 'oltr', list_dir='/d') == (
      '/d/Places_LT_open.txt',
      '/d/Places_LT_open',
  )


def test_places_lt_oltr_open_list(tmp_path):
  root = tmp_path / 'places'
  write_places_folder(str(root), 365, {'train': 1, 'val': 1, 'test': 1}, np.random.default_rng(0))
  os.makedirs(root / 'Places_LT_open' / 'a')
  Image.fromarray(smooth_image(0, 12, 10)).save(root / 'Places_LT_open' / 'a' / '1.jpg')
  (root / 'Places_LT_open.txt').write_text('a/1.jpg -1\n/a/1.jpg -1\n')  # OLTR allows a '/'.
  config = base.get_config().data
  config.update({'name': 'places_lt', 'data_dir': str(root), 'imbalance_ratio': 0.0})
  config.open_list = 'oltr'
  splits = data.load_datasets(config)
  assert len(splits.open_test) == 2 and splits.open_test.num_classes == 365
  assert splits.open_test.path(1) == str(root / 'Places_LT_open' / 'a' / '1.jpg')
  assert splits.open_test[0]['image'].shape == (12, 10, 3)


def test_missing_open_list_or_images_name_the_path_and_the_source(imagenet_lt, tmp_path):
  data_dir, lists, _ = imagenet_lt
  oltr = 'zhmiao/OpenLongTailRecognition-OLTR'
  missing = tmp_path / 'ImageNet_LT_open.txt'
  with pytest.raises(
      FileNotFoundError, match=f'Open-set list not found: looked for {missing}.*{oltr}'
  ):
    data.load_datasets(imagenet_lt_config(data_dir, lists, open_list=str(missing)))
  missing.write_text(f'{open_name(0)} -1\n')
  folder = tmp_path / 'ImageNet_LT_open'
  with pytest.raises(FileNotFoundError, match=f'Image folder .* looked for {folder}.*{oltr}'):
    data.load_datasets(imagenet_lt_config(data_dir, lists, open_list=str(missing)))
  os.makedirs(folder)
  with pytest.raises(FileNotFoundError, match=f'first image .* {folder / open_name(0)}.*{oltr}'):
    data.load_datasets(imagenet_lt_config(data_dir, lists, open_list=str(missing)))


@pytest.mark.parametrize(
    'overrides,match',
    [
        # A training class in the open list: the wrong list.
        ({'open_list': 'CLOSED'}, r'closed.txt: 1 images .* \(first: 7 for x.jpg\)'),
        ({'open_list': 'oltr', 'open_classes': (3,)}, 'set one of them'),
        ({'open_list': 'oltr', 'name': 'synthetic'}, 'needs a list-file data set'),
        # Before any split file is read (there is none here).
        ({'open_list': 'oltr', 'name': 'inat2018', 'list_dir': '/none'}, 'inat2018 has no OLTR'),
        ({'open_list': 'oltr', 'name': 'mini_imagenet_lt', 'list_dir': '/none'}, 'no OLTR'),
    ],
)
def test_invalid_open_list_raises(imagenet_lt, tmp_path, overrides, match):
  data_dir, lists, _ = imagenet_lt
  (tmp_path / 'closed').mkdir()
  (tmp_path / 'closed.txt').write_text('x.jpg -1\nx.jpg 7\n')
  config = imagenet_lt_config(data_dir, lists, **overrides)
  if config.open_list == 'CLOSED':
    config.open_list = str(tmp_path / 'closed.txt')
  with pytest.raises(ValueError, match=match):
    data.load_datasets(config)


def test_report_adds_the_oltr_f_measure_of_the_open_list(imagenet_lt, tmp_path):
  """A run trained without the open list is evaluated on it afterwards, beside its test set."""
  data_dir, lists, _ = imagenet_lt
  config = base.get_config()
  config.data = imagenet_lt_config(data_dir, lists, augment='imagenet', image_size=32)
  config.eval.image_size = 32
  config.model.name = 'small_cnn'
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 512, 2
  config.progress_bar = False
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  report = workdir_report.report_for_workdir(
      workdir,
      checkpoint='latest',
      sharpness_directions=0,
      config_overrides={'data.open_list': 'oltr'},
  )
  open_set = report['open_set']
  assert open_set['closed_images'] == 1000 and open_set['open_images'] == NUM_OPEN
  assert 0.0 <= report['open_set_f_measure'] <= 1.0


# mini-ImageNet-LT.


def jpeg_bytes() -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(smooth_image(0, 10, 12)).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def write_imagenet_train(root, per_class: int, extra: dict | None = None):
  """An ILSVRC-2012 train stand-in for the 100 mini-ImageNet classes: <wnid>/<wnid>_<n>.JPEG."""
  content = jpeg_bytes()
  for wnid in listfile.MINI_IMAGENET_WNIDS:
    os.makedirs(root / wnid)
    for n in range((extra or {}).get(wnid, per_class)):
      (root / wnid / f'{wnid}_{3 * n + 1}.JPEG').write_bytes(content)
  (root / listfile.MINI_IMAGENET_WNIDS[0] / 'notes.txt').write_text('not an image')


def read_lines(path):
  with open(path) as f:
    return [line.split() for line in f if line.strip()]


def test_mini_imagenet_lt_published_sizes_follow_the_construction():
  layout = listfile.SPLITS['mini_imagenet_lt']
  per_class = listfile.MINI_IMAGENET_LT_PER_CLASS
  counts = longtail.long_tail_counts(100, per_class['train'], 100.0)
  assert counts[0] == 500 and counts[-1] == 5  # rho = 100, n_c = int(500 * 0.01^(c/99)).
  assert layout.sizes == {'train': int(counts.sum()), 'val': 10_000, 'test': 10_000}
  assert layout.sizes['train'] == 10_847
  assert layout.files == {s: f'0.01_{s}.txt' for s in ('train', 'val', 'test')}
  assert (
      layout.class_names == listfile.MINI_IMAGENET_WNIDS == tuple(sorted(set(layout.class_names)))
  )
  assert len(layout.class_names) == layout.num_classes == 100
  assert 'mini_imagenet_lt' in datasets.SOURCES


def test_write_mini_imagenet_lt_lists_and_load_them(tmp_path, monkeypatch, caplog):
  """The construction at a small scale (12/2/2 per class, rho 10), then the data set."""
  per_class = {'train': 12, 'val': 2, 'test': 2}
  monkeypatch.setattr(listfile, 'MINI_IMAGENET_LT_PER_CLASS', per_class)
  imagenet_train = tmp_path / 'train'
  write_imagenet_train(imagenet_train, 18)
  written = listfile.write_mini_imagenet_lt_lists(
      imagenet_train, tmp_path / 'a', imbalance_ratio=10
  )
  assert written == {s: str(tmp_path / 'a' / f'0.1_{s}.txt') for s in per_class}
  again = listfile.write_mini_imagenet_lt_lists(imagenet_train, tmp_path / 'b', imbalance_ratio=10)
  other = listfile.write_mini_imagenet_lt_lists(
      imagenet_train, tmp_path / 'c', imbalance_ratio=10, seed=1
  )
  lines = {s: read_lines(p) for s, p in written.items()}
  assert lines == {s: read_lines(p) for s, p in again.items()}  # A seed fixes the lists.
  assert lines != {s: read_lines(p) for s, p in other.items()}
  counts = longtail.long_tail_counts(100, 12, 10)
  for split, split_lines in lines.items():
    labels = np.array([int(label) for _, label in split_lines])
    expected = counts if split == 'train' else np.full(100, per_class[split])
    np.testing.assert_array_equal(np.bincount(labels, minlength=100), expected)
    assert (np.diff(labels) >= 0).all()  # Class by class.
    for name, label in split_lines:  # Bare ImageNet file names of the label's wnid.
      assert '/' not in name and name.split('_')[0] == listfile.MINI_IMAGENET_WNIDS[int(label)]
  # Train, val and test images of a class are disjoint.
  for c in range(100):
    per_split = [{n for n, label in lines[s] if int(label) == c} for s in per_class]
    assert sum(map(len, per_split)) == len(set().union(*per_split))
  # The data set reads the rho = 100 names from list_dir, the images from ImageNet's train folder.
  for split in per_class:
    os.rename(written[split], tmp_path / 'a' / f'0.01_{split}.txt')
  config = base.get_config().data
  config.update(
      {'name': 'mini_imagenet_lt', 'data_dir': str(imagenet_train), 'imbalance_ratio': 0.0}
  )
  config.list_dir = str(tmp_path / 'a')
  splits = data.load_datasets(config)
  assert 'the published mini_imagenet_lt train split has 10847' in caplog.text  # A warning only.
  np.testing.assert_array_equal(splits.train_counts, counts)
  assert len(splits.val) == len(splits.test) == 200
  assert splits.train.class_names == listfile.MINI_IMAGENET_WNIDS and splits.open_test is None
  name, label = lines['test'][-1]
  wnid = listfile.MINI_IMAGENET_WNIDS[int(label)]
  assert splits.test.path(len(splits.test) - 1) == str(imagenet_train / wnid / name)
  assert splits.test[len(splits.test) - 1]['image'].shape == (10, 12, 3)
  assert splits.test.labels[-1] == int(label) == 99


def test_mini_imagenet_lt_missing_files_say_how_to_make_them(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='0.01_train.txt.*write_mini_imagenet_lt_lists'):
    listfile.load_list_split('mini_imagenet_lt', 'train', root=str(tmp_path))
  monkeypatch.setattr(listfile, 'MINI_IMAGENET_LT_PER_CLASS', {'train': 3, 'val': 1, 'test': 1})
  with pytest.raises(FileNotFoundError, match='n01532829 not found.*ILSVRC-2012 train'):
    listfile.write_mini_imagenet_lt_lists(tmp_path, tmp_path / 'out', imbalance_ratio=2)
  write_imagenet_train(tmp_path / 'train', 5, extra={'n02074367': 4})
  with pytest.raises(ValueError, match='n02074367 holds 4 images named n02074367_\\*.*draws 5'):
    listfile.write_mini_imagenet_lt_lists(tmp_path / 'train', tmp_path / 'out', imbalance_ratio=2)
