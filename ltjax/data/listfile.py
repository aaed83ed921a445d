"""Image folders described by list files: ImageNet-LT, Places-LT, iNaturalist 2018.

A list file (the OLTR / Decoupling split files) has one image per line,

    <relative/path/to/image.jpg> <integer label>

separated by whitespace; the image lives at ``os.path.join(root, relpath)``
(a leading ``/`` on relpath is ignored, so the path always stays under root).
Blank lines and trailing whitespace are ignored; the label is the last field,
so a path may contain spaces.

``ListFileSource`` is a random-access source with the protocol of
``ltjax.data.ArrayDataset``: ``labels`` come from the list file (no image is
opened to build them) and ``__getitem__`` decodes one image with Pillow to
(H, W, 3) uint8 RGB, so JPEG decoding runs in the input workers. The object
holds only numpy arrays and strings -- never an open file -- so grain can
pickle it into worker processes.

``load_list_split`` knows the split-file names, class counts, sizes and
normalisation of the three standard data sets (``SPLITS``).

Corrupt images. By default an unreadable image raises ``UnreadableImageError``
naming the file. With ``skip_corrupt=True`` the next readable image in index
order (wrapping around at the end) is returned instead, with its own label, so
the replacement is a deterministic function of the index. Every skip is logged
once per process, kept in a per-process set, and -- if ``skip_log_dir`` is
given -- appended as one line to ``<skip_log_dir>/skipped-<pid>.txt``, so
``skipped()`` can report the skips of all input worker processes, not only
the ones seen by the process that asks. Without ``skip_log_dir`` it reports
only the calling process's skips (grain workers are separate processes).
"""

import dataclasses
import glob
import os

from absl import logging
import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)


@dataclasses.dataclass(frozen=True)
class SplitLayout:
  """Where a data set's split files are and what they should contain.

  Attributes:
    files: split name -> list-file name.
    sizes: split name -> expected number of lines.
    num_classes: number of classes.
    mean, std: per-channel normalisation in [0, 1] pixel units.
    images: how to get the images (for error messages).
  """

  files: dict[str, str]
  sizes: dict[str, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  images: str


_SPLIT_FILE_SOURCE = (
    'The split files are those of OLTR (Liu et al., CVPR 2019, zhmiao/'
    'OpenLongTailRecognition-OLTR) and Decoupling (Kang et al., ICLR 2020, '
    'facebookresearch/classifier-balancing); copies ship with '
    'BalancedMetaSoftmax-Classification (data/) and Saddle-LongTail (datasets/data_txt/).'
)

SPLITS = {
    'imagenet_lt': SplitLayout(
        files={
            'train': 'ImageNet_LT_train.txt',
            'val': 'ImageNet_LT_val.txt',
            'test': 'ImageNet_LT_test.txt',
        },
        sizes={'train': 115_846, 'val': 20_000, 'test': 50_000},
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        images='the ILSVRC-2012 train and val images (image-net.org), with val '
        'sorted into class folders as the split files expect (val/<wnid>/...)',
    ),
    'places_lt': SplitLayout(
        files={
            'train': 'Places_LT_train.txt',
            'val': 'Places_LT_val.txt',
            'test': 'Places_LT_test.txt',
        },
        sizes={'train': 62_500, 'val': 7_300, 'test': 36_500},
        num_classes=365,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        images='the Places365-Standard 256x256 train and val images ' '(places2.csail.mit.edu)',
    ),
    # iNaturalist 2018 has no test labels; its val list serves as the test split.
    'inat2018': SplitLayout(
        files={
            'train': 'iNaturalist18_train.txt',
            'val': 'iNaturalist18_val.txt',
            'test': 'iNaturalist18_val.txt',
        },
        sizes={'train': 437_513, 'val': 24_426, 'test': 24_426},
        num_classes=8142,
        mean=INAT_MEAN,
        std=INAT_STD,
        images='the iNaturalist 2018 train_val2018 images ' '(visipedia/inat_comp, 2018)',
    ),
}

# Pillow raises these for missing, truncated or undecodable files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImageError(OSError):
  """An image named by a list file cannot be opened or decoded."""


def read_list_file(list_file: str) -> tuple[list[str], np.ndarray]:
  """Parses a ``relpath label`` list file.

  Args:
    list_file: path of the list file.

  Returns:
    (relative paths, (N,) int32 labels), in file order.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a non-blank line is not ``relpath label`` with an integer
      label (the message names the file and the line number).
  """
  paths, labels = [], []
  with open(list_file, encoding='utf-8') as f:
    for line_number, line in enumerate(f, start=1):
      line = line.strip()
      if not line:
        continue
      fields = line.rsplit(None, 1)
      try:
        if len(fields) != 2:
          raise ValueError
        label = int(fields[1])
      except ValueError:
        raise ValueError(
            f'{list_file}, line {line_number}: expected "<relative path> <integer '
            f'label>", got {line[:200]!r}. Fix or remove the line.'
        ) from None
      paths.append(fields[0])
      labels.append(label)
  return paths, np.asarray(labels, np.int64)


def _class_names_from_paths(
    paths: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[str, ...]:
  """Name of class c: the parent folder of its first image, else 'class_<c>'.

  The standard layouts keep one folder per class (ImageNet wnids, Places
  scene names, iNaturalist category ids), so the folder is the natural name.
  """
  names = [f'class_{c}' for c in range(num_classes)]
  first = np.full(num_classes, -1, np.int64)
  _, first_index = np.unique(labels, return_index=True)
  first[labels[first_index]] = first_index
  for c in np.flatnonzero(first >= 0):
    folder = os.path.basename(os.path.dirname(paths[first[c]].decode('utf-8')))
    if folder:
      names[c] = folder
  return tuple(names)


class ListFileSource:
  """Random-access source over the images of a ``relpath label`` list file.

  Attributes:
    root: image root directory.
    list_file: the list file the records came from (for messages).
    labels: (N,) int32 labels, from the list file.
    num_classes: C.
    mean, std: per-channel normalisation in [0, 1] pixel units.
    class_names: C names (see ``_class_names_from_paths``).
    skip_corrupt: whether unreadable images are replaced (module docstring).
    skip_log_dir: directory of the per-process skip logs, or None.
  """

  def __init__(
      self,
      root: str,
      list_file: str,
      *,
      num_classes: int | None = None,
      mean: tuple[float, ...],
      std: tuple[float, ...],
      class_names: tuple[str, ...] | None = None,
      skip_corrupt: bool = False,
      skip_log_dir: str | None = None,
  ):
    """Reads the list file; no image is opened.

    Args:
      root: directory the relative paths are relative to.
      list_file: the ``relpath label`` file.
      num_classes: number of classes; default max(label) + 1.
      mean, std: per-channel normalisation in [0, 1] pixel units.
      class_names: C names; default the class folders.
      skip_corrupt: replace unreadable images instead of raising.
      skip_log_dir: where worker processes record skipped files (created).

    Raises:
      FileNotFoundError: root or list_file does not exist.
      ValueError: a malformed line, or a label outside [0, num_classes).
    """
    root, list_file = os.fspath(root), os.fspath(list_file)
    if not os.path.isdir(root):
      raise FileNotFoundError(f'Image root {root} does not exist or is not a directory.')
    if not os.path.isfile(list_file):
      raise FileNotFoundError(f'List file {list_file} does not exist.')
    paths, labels = read_list_file(list_file)
    if not paths:
      raise ValueError(f'{list_file} lists no images.')
    if num_classes is None:
      num_classes = int(labels.max()) + 1
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
      line = int(np.flatnonzero(bad)[0])
      raise ValueError(
          f'{list_file}: {int(bad.sum())} labels outside [0, {num_classes}) (first: '
          f'{labels[line]} for {paths[line]}). The list file belongs to another data set '
          f'or num_classes is wrong; pass the list file of this data set or the right '
          f'num_classes.'
      )
    # Leading '/' would make os.path.join drop root; strip it so paths stay under root.
    # Fixed-width bytes pickle as one buffer (437k iNat paths: ~30 MB) and subset cheaply.
    self._paths = np.array([p.lstrip('/').encode('utf-8') for p in paths])
    self.labels = labels.astype(np.int32)
    self.root = root
    self.list_file = list_file
    self.num_classes = int(num_classes)
    self.mean = tuple(mean)
    self.std = tuple(std)
    self.class_names = (
        tuple(class_names)
        if class_names is not None
        else _class_names_from_paths(self._paths, self.labels, self.num_classes)
    )
    if len(self.class_names) != self.num_classes:
      raise ValueError(f'{len(self.class_names)} class names for {self.num_classes} classes.')
    self.skip_corrupt = skip_corrupt
    self.skip_log_dir = None if skip_log_dir is None else os.fspath(skip_log_dir)
    if self.skip_log_dir is not None:
      os.makedirs(self.skip_log_dir, exist_ok=True)
    self._skipped: set[str] = set()

  def __len__(self) -> int:
    return len(self.labels)

  def path(self, index: int) -> str:
    """Full path of image ``index``."""
    return os.path.join(self.root, self._paths[index].decode('utf-8'))

  def _decode(self, index: int) -> np.ndarray:
    path = self.path(index)
    try:
      with Image.open(path) as image:
        return np.asarray(image.convert('RGB'), np.uint8)
    except _DECODE_ERRORS as e:
      raise UnreadableImageError(
          f'Cannot read image {path} (record {index} of {self.list_file}): '
          f'{type(e).__name__}: {e}. Replace the file, remove its line from the list '
          f'file, or set config.data.skip_corrupt=True to skip unreadable images.'
      ) from e

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, 3) uint8, 'label': int} (the source protocol)."""
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f'Index {index} out of range for {len(self)} records.')
    index %= len(self)
    if not self.skip_corrupt:
      return {'image': self._decode(index), 'label': int(self.labels[index])}
    for step in range(len(self)):
      i = (index + step) % len(self)
      try:
        return {'image': self._decode(i), 'label': int(self.labels[i])}
      except UnreadableImageError as e:
        self._record_skip(self.path(i), e)
    raise UnreadableImageError(
        f'No image listed in {self.list_file} under {self.root} ' 'is readable.'
    )

  def _record_skip(self, path: str, error: Exception) -> None:
    if path in self._skipped:
      return
    self._skipped.add(path)
    logging.warning('Skipping unreadable image (skip_corrupt=True): %s', error)
    if self.skip_log_dir is not None:
      # One short O_APPEND write per skip: lines from one process never interleave,
      # and no handle outlives the call (the source must stay picklable).
      log = os.path.join(self.skip_log_dir, f'skipped-{os.getpid()}.txt')
      with open(log, 'a', encoding='utf-8') as f:
        f.write(path + '\n')

  def skipped(self) -> set[str]:
    """Paths skipped as unreadable: this process's, plus all logged in skip_log_dir."""
    paths = set(self._skipped)
    if self.skip_log_dir is not None:
      for log in glob.glob(os.path.join(self.skip_log_dir, 'skipped-*.txt')):
        with open(log, encoding='utf-8') as f:
          paths.update(line.rstrip('\n') for line in f if line.strip())
    return paths

  def subset(self, indices: np.ndarray) -> 'ListFileSource':
    """The same source restricted to ``indices``, in that order."""
    indices = np.asarray(indices, np.int64)
    new = object.__new__(ListFileSource)
    new.__dict__.update(self.__dict__)
    new._paths = self._paths[indices]  # pylint: disable=protected-access
    new.labels = self.labels[indices]
    new._skipped = set()  # pylint: disable=protected-access
    return new

  def __getstate__(self) -> dict:
    # Skips seen in this process stay here; a worker starts with an empty set.
    state = dict(self.__dict__)
    state['_skipped'] = set()
    return state

  def __repr__(self) -> str:
    return (
        f'ListFileSource({self.list_file!r}, root={self.root!r}, n={len(self)}, '
        f'num_classes={self.num_classes})'
    )


def _missing_message(what: str, path: str, name: str, layout: SplitLayout) -> str:
  return (
      f'{name}: {what} not found: looked for {path}. {_SPLIT_FILE_SOURCE} Put the '
      f'split files ({", ".join(sorted(set(layout.files.values())))}) in the image root '
      f'or pass their directory as list_dir (config.data.list_dir); the image root must '
      f'hold {layout.images}.'
  )


def load_list_split(
    name: str,
    split: str,
    *,
    root: str,
    list_dir: str | None = None,
    skip_corrupt: bool = False,
    skip_log_dir: str | None = None,
) -> ListFileSource:
  """A split of a known list-file data set (``SPLITS``).

  Args:
    name: 'imagenet_lt', 'places_lt' or 'inat2018'.
    split: 'train', 'val' or 'test' (iNaturalist 2018: 'test' is its val list).
    root: image root, the directory the list files' paths are relative to.
    list_dir: directory of the split files; default root.
    skip_corrupt: replace unreadable images (module docstring).
    skip_log_dir: where worker processes record skipped files.

  Returns:
    The source. A size other than the published one is logged as a warning,
    not an error, so trimmed split files work.

  Raises:
    ValueError: unknown name or split.
    FileNotFoundError: root or the split file is missing (the message names
      the path and where to get the data).
  """
  if name not in SPLITS:
    raise ValueError(f'Unknown list-file data set {name!r}; valid: {sorted(SPLITS)}.')
  layout = SPLITS[name]
  if split not in layout.files:
    raise ValueError(f'Unknown split {split!r} of {name}; valid: {sorted(layout.files)}.')
  root = os.fspath(root)
  if not os.path.isdir(root):
    raise FileNotFoundError(_missing_message('image root', root, name, layout))
  list_file = os.path.join(os.fspath(list_dir) if list_dir else root, layout.files[split])
  if not os.path.isfile(list_file):
    raise FileNotFoundError(_missing_message('split file', list_file, name, layout))
  source = ListFileSource(
      root,
      list_file,
      num_classes=layout.num_classes,
      mean=layout.mean,
      std=layout.std,
      skip_corrupt=skip_corrupt,
      skip_log_dir=skip_log_dir,
  )
  if len(source) != layout.sizes[split]:
    logging.warning(
        '%s lists %d images; the published %s %s split has %d.',
        list_file,
        len(source),
        name,
        split,
        layout.sizes[split],
    )
  return source
