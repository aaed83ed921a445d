"""Tests for ltjax.data.listfile: list-file image folders (ImageNet-LT, Places-LT, iNat)."""

import multiprocessing
import operator
import os
import pickle
import threading

import numpy as np
from PIL import Image
import pytest

from fake_bucket import fake_bucket
from ltjax.data import listfile

COUNTS = (100, 80, 50, 35, 20, 15)  # 300 images, a long tail over 6 of the 1000 classes.
H, W = 16, 20


def smooth_image(i: int) -> np.ndarray:
  """A (H, W, 3) image JPEG keeps within a few levels: a colour plus gentle ramps."""
  rng = np.random.default_rng(i)
  colour = rng.integers(40, 200, 3)
  ramp = np.add.outer(np.arange(H) * 2, np.arange(W))[..., None]
  return (colour + ramp).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def imagenet_lt(tmp_path_factory):
  """An ImageNet-LT-style folder: train/<wnid>/<file>.JPEG plus the three split files."""
  root = tmp_path_factory.mktemp('imagenet_lt')
  lines, images = {'train': [], 'val': [], 'test': []}, {}
  for c, n in enumerate(COUNTS):
    os.makedirs(root / 'train' / f'n0000{c}')
    for j in range(n):
      relpath = f'train/n0000{c}/n0000{c}_{j}.JPEG'
      images[relpath] = smooth_image(len(images))
      Image.fromarray(images[relpath]).save(root / relpath, format='JPEG', quality=95)
      split = 'train' if j >= 4 else ('val' if j < 2 else 'test')
      lines[split].append(f'{relpath} {c}')
  for split, split_lines in lines.items():
    # Trailing whitespace and blank lines are tolerated.
    (root / f'ImageNet_LT_{split}.txt').write_text('\n'.join(split_lines) + '  \n\n')
  return root, lines, images


def test_list_file_source_end_to_end(imagenet_lt, caplog):
  root, lines, images = imagenet_lt
  source = listfile.load_list_split('imagenet_lt', 'train', root=str(root))
  assert 'published imagenet_lt train split has 115846' in caplog.text  # A warning only.
  assert len(source) == len(lines['train']) == 300 - 4 * len(COUNTS)
  expected_labels = [int(line.split()[1]) for line in lines['train']]
  np.testing.assert_array_equal(source.labels, expected_labels)
  assert source.labels.dtype == np.int32
  assert source.num_classes == 1000
  assert source.mean == listfile.IMAGENET_MEAN and source.std == listfile.IMAGENET_STD
  assert source.class_names[:6] == tuple(f'n0000{c}' for c in range(6))
  assert source.class_names[6] == 'class_6'  # No image, no folder name.
  for i in (0, 17, len(source) - 1):
    record = source[i]
    relpath = lines['train'][i].split()[0]
    assert record['image'].shape == (H, W, 3) and record['image'].dtype == np.uint8
    assert record['label'] == expected_labels[i]
    # JPEG is lossy: smooth images come back within a few levels.
    error = np.abs(record['image'].astype(int) - images[relpath].astype(int))
    assert error.mean() < 2 and error.max() < 12


def test_list_file_subset_and_pickle(imagenet_lt):
  root, lines, _ = imagenet_lt
  source = listfile.load_list_split('imagenet_lt', 'test', root=str(root))
  assert len(source) == 2 * len(COUNTS)
  indices = np.array([7, 0, 11, 3])
  sub = source.subset(indices)
  assert isinstance(sub, listfile.ListFileSource) and len(sub) == 4
  np.testing.assert_array_equal(sub.labels, source.labels[indices])
  assert sub.path(0) == os.path.join(str(root), lines['test'][7].split()[0])
  twice = pickle.loads(pickle.dumps(sub.subset([2, 0])))
  assert twice.class_names == source.class_names and twice.num_classes == 1000
  for i, j in enumerate([11, 7]):
    np.testing.assert_array_equal(twice[i]['image'], source[j]['image'])
    assert twice[i]['label'] == source[j]['label']


def test_list_file_png_exact_grayscale_to_rgb(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
  gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a b.png')  # A space in the path is fine.
  Image.fromarray(gray).save(tmp_path / 'g.png')
  (tmp_path / 'list.txt').write_text('a b.png 1\n/g.png\t0\n')  # A leading '/': the root's.
  source = listfile.ListFileSource(
      tmp_path, tmp_path / 'list.txt', mean=(0.5,) * 3, std=(0.25,) * 3
  )
  assert source.num_classes == 2  # Inferred: max label + 1.
  np.testing.assert_array_equal(source[0]['image'], rgb)
  np.testing.assert_array_equal(source[1]['image'], np.repeat(gray[..., None], 3, -1))
  assert source[-1]['label'] == 0
  with pytest.raises(IndexError):
    source[2]  # pylint: disable=pointless-statement


def test_list_file_missing_root_and_split_file(tmp_path):
  missing = tmp_path / 'nope'
  with pytest.raises(FileNotFoundError, match=f'image root not found: looked for {missing}.*OLTR'):
    listfile.load_list_split('places_lt', 'train', root=str(missing))
  expected = tmp_path / 'Places_LT_val.txt'
  with pytest.raises(
      FileNotFoundError, match=f'split file not found: looked for {expected}.*' 'Places365'
  ):
    listfile.load_list_split('places_lt', 'val', root=str(tmp_path))
  lists = tmp_path / 'lists'
  with pytest.raises(FileNotFoundError, match=str(lists / 'iNaturalist18_val.txt')):
    listfile.load_list_split('inat2018', 'test', root=str(tmp_path), list_dir=str(lists))
  with pytest.raises(ValueError, match='valid:'):
    listfile.load_list_split('imagenet', 'train', root=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='config.data.data_dir is empty'):
    listfile.load_list_split('places_lt', 'train', root='')  # Not "looked for .".


def test_list_file_malformed_line_and_label_range(tmp_path):
  lists = tmp_path / 'lists'
  lists.mkdir()
  bad = lists / 'Places_LT_train.txt'
  bad.write_text('a/x.jpg 0\n\na/y.jpg\n')
  with pytest.raises(ValueError, match=f'{bad}, line 3: expected'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))
  bad.write_text('a/x.jpg 0\na/y.jpg one\n')
  with pytest.raises(ValueError, match='line 2'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))
  bad.write_text('a/x.jpg 0\na/y.jpg 365\n')
  with pytest.raises(ValueError, match=f'{bad}: 1 labels outside \\[0, 365\\).*a/y.jpg'):
    listfile.load_list_split('places_lt', 'train', root=str(tmp_path), list_dir=str(lists))


@pytest.fixture
def with_corrupt(tmp_path):
  """Five PNGs listed in order; #1 truncated, #2 not an image, #4 missing."""
  images = [np.full((3, 4, 3), 10 * i, np.uint8) for i in range(5)]
  for i, image in enumerate(images):
    Image.fromarray(image).save(tmp_path / f'{i}.jpg', format='JPEG')
  raw = (tmp_path / '1.jpg').read_bytes()
  (tmp_path / '1.jpg').write_bytes(raw[: int(len(raw) * 0.6)])
  (tmp_path / '2.jpg').write_bytes(b'not an image')
  os.remove(tmp_path / '4.jpg')
  (tmp_path / 'list.txt').write_text(''.join(f'{i}.jpg {i}\n' for i in range(5)))
  return tmp_path


def test_corrupt_image_raises_naming_the_file(with_corrupt):
  source = listfile.ListFileSource(
      with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3, std=(0.25,) * 3
  )
  assert source[0]['label'] == 0
  for i in (1, 2, 4):
    with pytest.raises(
        listfile.UnreadableImageError, match=f'{with_corrupt / f"{i}.jpg"}.*skip_corrupt=True'
    ):
      source[i]  # pylint: disable=pointless-statement


def test_skip_corrupt_returns_next_readable_and_records(with_corrupt, tmp_path_factory):
  log_dir = tmp_path_factory.mktemp('skips')
  source = listfile.ListFileSource(
      with_corrupt,
      with_corrupt / 'list.txt',
      mean=(0.5,) * 3,
      std=(0.25,) * 3,
      skip_corrupt=True,
      skip_log_dir=log_dir,
  )
  assert len(source) == 5  # Labels stay those of the list file.
  record = source[1]  # 1 and 2 unreadable: the next readable one is 3.
  assert record['label'] == 3 and int(record['image'].mean()) == 30
  assert source.skipped() == {str(with_corrupt / '1.jpg'), str(with_corrupt / '2.jpg')}
  assert source[4]['label'] == 0  # Wraps around at the end.
  # A worker process: the source is pickled into it and its skips reach the log dir.
  fresh = listfile.ListFileSource(
      with_corrupt,
      with_corrupt / 'list.txt',
      mean=(0.5,) * 3,
      std=(0.25,) * 3,
      skip_corrupt=True,
      skip_log_dir=tmp_path_factory.mktemp('worker_skips'),
  )
  with multiprocessing.get_context('spawn').Pool(1) as pool:
    assert pool.apply(operator.getitem, (fresh, 2))['label'] == 3
  assert fresh._skipped == set()  # pylint: disable=protected-access
  assert fresh.skipped() == {str(with_corrupt / '2.jpg')}
  # Without a log dir only this process's skips are known.
  local = listfile.ListFileSource(
      with_corrupt, with_corrupt / 'list.txt', mean=(0.5,) * 3, std=(0.25,) * 3, skip_corrupt=True
  )
  assert local[4]['label'] == 0 and local.skipped() == {str(with_corrupt / '4.jpg')}
  assert pickle.loads(pickle.dumps(local)).skipped() == set()


def write_png(path, value=7):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(path)


def list_source(root, list_file, **kwargs):
  return listfile.ListFileSource(root, list_file, mean=(0.5,) * 3, std=(0.25,) * 3, **kwargs)


@pytest.mark.parametrize(
    'line', ['../outside.png', 'sub/../../outside.png', '..', '/../etc/hostname', '//../x.png']
)
def test_a_path_outside_the_image_root_is_refused_naming_the_line(tmp_path, line):
  root = tmp_path / 'root'
  write_png(root / 'sub' / 'a.png')
  write_png(tmp_path / 'outside.png')
  # Line 3: the blank line counts, as an editor numbers the file.
  (root / 'list.txt').write_text(f'sub/a.png 0\n\n{line} 1\n')
  with pytest.raises(ValueError) as error:
    list_source(root, root / 'list.txt')
  message = str(error.value)
  assert f'{root / "list.txt"}, line 3: {line!r}' in message, message
  assert 'config.data.data_dir' in message, message  # What the paths are relative to.


def test_paths_that_stay_under_the_root_and_symlinks_in_it_are_read(tmp_path):
  # The rule is lexical: a link inside the root is followed wherever it points (an image
  # folder linked in from shared storage is a common layout).
  root, shared = tmp_path / 'root', tmp_path / 'shared'
  write_png(root / 'sub' / 'a.png', 1)
  write_png(shared / 'b.png', 2)
  os.symlink(shared, root / 'linked')
  (root / 'list.txt').write_text('sub/../sub/a.png 0\n./linked/b.png 1\n')
  source = list_source(root, root / 'list.txt')
  assert [int(source[i]['image'][0, 0, 0]) for i in range(2)] == [1, 2]


def test_class_folders_cannot_lead_out_of_the_root(tmp_path):
  # mini-ImageNet-LT lists name bare files '<wnid>_<n>.JPEG', read from <root>/<wnid>/.
  (tmp_path / 'list.txt').write_text('n01_1.JPEG 0\n.._2.JPEG 0\n')
  with pytest.raises(ValueError, match=r"list.txt, line 2: '.._2.JPEG'"):
    list_source(tmp_path, tmp_path / 'list.txt', class_folders=True)


def read_in_thread(read, fifo, what, timeout=20.0):
  """``read()``'s exception (None if it returned); fails the test if ``read`` blocks."""
  outcome = {}

  def run():
    try:
      read()
      outcome['error'] = None
    except Exception as e:  # pylint: disable=broad-except
      outcome['error'] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout)
  if thread.is_alive():  # Opening the FIFO blocks until a writer comes: be one, then fail.
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(10)
    pytest.fail(f'{what}: opening the FIFO blocked')
  return outcome['error']


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs here')
def test_a_fifo_named_by_a_line_is_refused_instead_of_blocking(tmp_path):
  write_png(tmp_path / 'a.png')
  fifo = tmp_path / 'pipe.png'
  os.mkfifo(fifo)
  (tmp_path / 'list.txt').write_text('a.png 0\npipe.png 1\n')
  source = list_source(tmp_path, tmp_path / 'list.txt')
  for what, read in (('decode', lambda: source[1]), ('encoded (DALI)', lambda: source.encoded(1))):
    error = read_in_thread(read, fifo, what)
    assert isinstance(error, listfile.UnreadableImageError), (what, error)
    assert 'not a regular file' in str(error), str(error)
    assert f'line 2 of {tmp_path / "list.txt"}' in str(error), str(error)
  assert read_in_thread(source.unreadable, fifo, 'verify') is None
  bad = source.unreadable()  # data.verify_eval_images' check.
  assert [i for i, _ in bad] == [1] and 'not a regular file' in bad[0][1], bad
  skipping = list_source(tmp_path, tmp_path / 'list.txt', skip_corrupt=True)
  assert read_in_thread(lambda: skipping[1], fifo, 'skip_corrupt') is None
  assert skipping[1]['label'] == 0  # Skipped as unreadable: the next readable record.


def test_remote_list_files_are_confined_too(tmp_path):
  root = tmp_path / 'store'
  write_png(root / 'bucket' / 'data' / 'img' / 'a.png', 3)
  (root / 'bucket' / 'data' / 'list.txt').write_text('img/a.png 0\n')
  (root / 'bucket' / 'data' / 'bad.txt').write_text('img/a.png 0\n../secret.png 1\n')
  with fake_bucket(root):
    source = list_source('gs://bucket/data', 'gs://bucket/data/list.txt')
    assert int(source[0]['image'][0, 0, 0]) == 3  # Read through etils.epath: no os.stat.
    with pytest.raises(ValueError, match=r"bad.txt, line 2: '../secret.png'"):
      list_source('gs://bucket/data', 'gs://bucket/data/bad.txt')
