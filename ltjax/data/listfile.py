"""Image folders described by list files: ImageNet-LT, Places-LT, iNaturalist 2018.

A list file (the OLTR / Decoupling split files) has one image per line,

    <relative/path/to/image.jpg> <integer label>

separated by whitespace; the image lives at ``os.path.join(root, relpath)``.
Blank lines and trailing whitespace are ignored; the label is the last field,
so a path may contain spaces.

Paths stay under the image root. A leading '/' is relative to the root, as
OLTR's loaders join root + path (the Places-LT lists write '/a/abbey/...').
The rule is lexical: a path whose ``..`` leads above the root once normalised
(``../x.jpg``, ``a/../../x.jpg``, ``/../x.jpg``) is refused when the list is
read, naming the list file, the line and the path. Symbolic links are not resolved: a link inside the
root is followed wherever it points -- an image folder linked in from shared
storage is a common layout, and the link is the owner's choice. A local path
that is not a regular file (a FIFO, whose opening blocks until a writer comes,
a device, a folder) is refused before it is opened, as an unreadable image
naming its line; ``gs://`` and other remote roots are read through
``etils.epath`` and hold only objects.

``ListFileSource`` is a random-access source with the protocol of
``ltjax.data.ArrayDataset``: ``labels`` come from the list file (no image is
opened to build them) and ``__getitem__`` decodes one image with Pillow to
(H, W, 3) uint8 RGB, so JPEG decoding runs in the input workers. The object
holds only numpy arrays and strings -- never an open file -- so grain can
pickle it into worker processes.

``load_list_split`` knows the split-file names, class counts, sizes and
normalisation of the standard data sets (``SPLITS``): ImageNet-LT, Places-LT,
iNaturalist 2018 and mini-ImageNet-LT.

Open-set lists (OLTR's protocol). ImageNet-LT and Places-LT come with an
open-set list, ``ImageNet_LT_open.txt`` / ``Places_LT_open.txt``, in the same
``relpath label`` format; OLTR's evaluation counts an image as open by its
label -1. OLTR's loader (``data/dataloader.py``) reads the images from the
folder named like the list beside it (``ImageNet_LT_open/``,
``Places_LT_open/``), not from the data set's image root. ImageNet-LT's list
has 18,000 lines ``ILSVRC2010_val_<8 digits>.JPEG -1``: files directly in that
folder. ``open_list_paths`` resolves ``config.data.open_list`` / ``open_dir``
to a list and its image folder, and ``load_open_list`` reads it as a source
whose every label is -1 (``ListFileSource(open_set=True)``).

mini-ImageNet-LT (Vigneswaran et al., ICVGIP 2021, TailCalibX; used by
Hasegawa & Sato, ICLR 2024). Its lists name ILSVRC-2012 *training* images of
the 100 mini-ImageNet classes (``MINI_IMAGENET_WNIDS``) by file name only,
``<wnid>_<n>.JPEG <label>``, label = the rank of the wnid in sorted order;
Hasegawa & Sato's code reads them from ImageNet's train folder,
``<ImageNet train>/<wnid>/<wnid>_<n>.JPEG`` (``class_folders=True``), at full
resolution -- not the 84x84 few-shot files -- with the ImageNet transforms
(RandomResizedCrop 224 + flip; Resize 256 + CenterCrop 224 at test). The
split files are named by the imbalance factor 1/rho: ``0.01_train.txt``
(long-tailed, rho = 100), ``0.01_val.txt`` and ``0.01_test.txt`` (100 images
per class each). They were never published -- both official codes draw them
at random when first run -- so ``write_mini_imagenet_lt_lists`` writes them
by the same construction from a seed (see there).

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
import concurrent.futures
import fnmatch
import io
import os
import posixpath
import stat

from absl import logging
import numpy as np
from PIL import Image

from ltjax import files
from ltjax.data import longtail
from ltjax.data import source_index

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
    source: where the split files come from (for error messages).
    class_folders: listed paths are bare file names ``<wnid>_<n>.JPEG`` whose
      image is at ``<root>/<wnid>/<name>`` (mini-ImageNet-LT).
    open_file: OLTR's open-set list of the data set ('' if none).
    open_size: its expected number of lines (0: not known; no warning).
    class_names: the C class names ((): the class folders of the images).
  """

  files: dict[str, str]
  sizes: dict[str, int]
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  images: str
  source: str = ''
  class_folders: bool = False
  open_file: str = ''
  open_size: int = 0
  class_names: tuple[str, ...] = ()


_SPLIT_FILE_SOURCE = (
    'The split files are those of OLTR (Liu et al., CVPR 2019, zhmiao/'
    'OpenLongTailRecognition-OLTR) and Decoupling (Kang et al., ICLR 2020, '
    'facebookresearch/classifier-balancing); copies ship with '
    'BalancedMetaSoftmax-Classification (data/) and Saddle-LongTail (datasets/data_txt/).'
)
_OPEN_LIST_SOURCE = (
    "OLTR's open-set lists come with its ImageNet-LT / Places-LT download (the Data "
    'Preparation section of the README of zhmiao/OpenLongTailRecognition-OLTR), each list '
    'beside the folder of its images: ImageNet_LT_open.txt with ImageNet_LT_open/ (18,000 '
    'ILSVRC-2010 validation JPEGs), Places_LT_open.txt with Places_LT_open/. The copies of '
    'the split files in BalancedMetaSoftmax-Classification and Saddle-LongTail do not '
    'include them.'
)
# The 100 mini-ImageNet classes of mini-ImageNet-LT (the official all_classes.txt), sorted:
# the official construction numbers the wnids in sorted order, so label c is
# MINI_IMAGENET_WNIDS[c] and the head class is n01532829.
MINI_IMAGENET_WNIDS = tuple("""
    n01532829 n01558993 n01704323 n01749939 n01770081 n01843383 n01855672 n01910747 n01930112
    n01981276 n02074367 n02089867 n02091244 n02091831 n02099601 n02101006 n02105505 n02108089
    n02108551 n02108915 n02110063 n02110341 n02111277 n02113712 n02114548 n02116738 n02120079
    n02129165 n02138441 n02165456 n02174001 n02219486 n02443484 n02457408 n02606052 n02687172
    n02747177 n02795169 n02823428 n02871525 n02950826 n02966193 n02971356 n02981792 n03017168
    n03047690 n03062245 n03075370 n03127925 n03146219 n03207743 n03220513 n03272010 n03337140
    n03347037 n03400231 n03417042 n03476684 n03527444 n03535780 n03544143 n03584254 n03676483
    n03770439 n03773504 n03775546 n03838899 n03854065 n03888605 n03908618 n03924679 n03980874
    n03998194 n04067472 n04146614 n04149813 n04243546 n04251144 n04258138 n04275548 n04296562
    n04389033 n04418357 n04435653 n04443257 n04509417 n04515003 n04522168 n04596742 n04604644
    n04612504 n06794110 n07584110 n07613480 n07697537 n07747607 n09246464 n09256479 n13054560
    n13133613
    """.split())
# Per class: training pool, validation and test images of the official construction.
MINI_IMAGENET_LT_PER_CLASS = {'train': 500, 'val': 100, 'test': 100}
_MINI_IMAGENET_LT_SOURCE = (
    'mini-ImageNet-LT (Vigneswaran et al., ICVGIP 2021) has no published split files: '
    'write them once with ltjax.data.listfile.write_mini_imagenet_lt_lists(<ILSVRC-2012 '
    'train folder>, <list dir>), or use the 0.01_*.txt files that the official code '
    '(rahulvigneswaran/TailCalibX, Notebooks/Create_mini-ImageNet-LT.ipynb; Hasegawa & '
    "Sato's utils/mini_imagenet/create_mini_imagenet.py) wrote for you."
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
        source=_SPLIT_FILE_SOURCE,
        open_file='ImageNet_LT_open.txt',
        open_size=18_000,
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
        source=_SPLIT_FILE_SOURCE,
        open_file='Places_LT_open.txt',
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
        source=_SPLIT_FILE_SOURCE,
    ),
    # Balanced val/test lists; the train list is already long-tailed (rho = 100).
    'mini_imagenet_lt': SplitLayout(
        files={
            'train': '0.01_train.txt',
            'val': '0.01_val.txt',
            'test': '0.01_test.txt',
        },
        sizes={'train': 10_847, 'val': 10_000, 'test': 10_000},
        num_classes=len(MINI_IMAGENET_WNIDS),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        images='the ILSVRC-2012 train images (image-net.org) in their class folders '
        '(<root>/<wnid>/<wnid>_<n>.JPEG): pass that train folder as the image root',
        source=_MINI_IMAGENET_LT_SOURCE,
        class_folders=True,
        class_names=MINI_IMAGENET_WNIDS,
    ),
}

# Pillow raises these for missing, truncated or undecodable files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class UnreadableImageError(OSError):
  """An image named by a list file cannot be opened or decoded."""


def _check_regular_file(path: str) -> None:
  """Refuses a local path that is not a regular file, before anything opens it.

  Opening a FIFO blocks until a writer comes (forever, for a run) and a device
  may never end. ``os.stat`` follows links: a link to an image is fine. Remote
  paths hold objects only, and are not stat'ed.
  """
  if files.is_remote(path):
    return
  mode = os.stat(path).st_mode
  if stat.S_ISREG(mode):
    return
  if stat.S_ISFIFO(mode):
    kind = 'a FIFO'
  elif stat.S_ISDIR(mode):
    kind = 'a folder'
  else:
    kind = 'a device, socket or other special file'
  raise UnreadableImageError(f'{path} is not a regular file but {kind}')


def _open_image(path: str) -> Image.Image:
  """Opens an image at a local path or a URL (read whole first: Pillow seeks)."""
  if files.is_remote(path):
    return Image.open(io.BytesIO(files.read_bytes(path)))
  _check_regular_file(path)
  return Image.open(path)


def _escapes_root(relpath: str) -> str:
  """Why ``relpath`` names something outside the folder it is relative to ('' if not).

  Lexical (see the module docstring): links are not resolved.
  """
  if os.path.isabs(relpath):  # A leading '/' is stripped before: a drive letter, say.
    return 'an absolute path'
  if '..' in relpath:  # Most paths have none: no normalisation for 437k iNat lines.
    normal = posixpath.normpath(relpath)
    if normal == '..' or normal.startswith('../'):
      return "its '..' leads out of it"
  return ''


def _read_lines(list_file: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(relative paths, (N,) int64 labels, (N,) line numbers) of a list file."""
  paths, labels, line_numbers = [], [], []
  with files.open_file(list_file, 'r') as f:  # A local path or a URL (gs://...).
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
      line_numbers.append(line_number)
  return paths, np.asarray(labels, np.int64), np.asarray(line_numbers, np.int32)


def read_list_file(list_file: str) -> tuple[list[str], np.ndarray]:
  """Parses a ``relpath label`` list file.

  Args:
    list_file: path of the list file.

  Returns:
    (relative paths, (N,) int64 labels), in file order.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: a non-blank line is not ``relpath label`` with an integer
      label (the message names the file and the line number).
  """
  paths, labels, _ = _read_lines(list_file)
  return paths, labels


def _check_confined(list_file: str, root: str, listed: list[str], paths: list[str], lines) -> None:
  """Raises ValueError naming the first line whose path leaves the image root (and the count)."""
  bad = [(i, why) for i, path in enumerate(paths) if (why := _escapes_root(path))]
  if not bad:
    return
  i, why = bad[0]
  more = f' ({len(bad) - 1} more lines like it)' if len(bad) > 1 else ''
  raise ValueError(
      f'{list_file}, line {lines[i]}: {listed[i]!r} is outside the image root {root} '
      f'({why}){more}. List-file paths are relative to the image root (config.data.data_dir; '
      'for an open-set list, config.data.open_dir) and stay under it: write them relative to '
      'it, or move (or link) the images into it.'
  )


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
    open_set: every record is an open-set image, label -1 (OLTR's open lists).
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
      class_folders: bool = False,
      open_set: bool = False,
  ):
    """Reads the list file; no image is opened.

    Args:
      root: directory the relative paths are relative to.
      list_file: the ``relpath label`` file.
      num_classes: number of classes; default max(label) + 1 (required with
        open_set).
      mean, std: per-channel normalisation in [0, 1] pixel units.
      class_names: C names; default the class folders ('class_<c>' with
        open_set).
      skip_corrupt: replace unreadable images instead of raising.
      skip_log_dir: where worker processes record skipped files (created).
      class_folders: a listed path without a folder, ``<wnid>_<n>.JPEG``, is
        read from ``<root>/<wnid>/`` (the part of the name before its first
        '_'; mini-ImageNet-LT's lists name ImageNet train files this way).
      open_set: the list holds open-set images (OLTR's ``*_open.txt``): their
        labels must lie outside [0, num_classes) -- OLTR writes -1 -- and every
        record gets label -1 ("unknown").

    Raises:
      FileNotFoundError: root or list_file does not exist.
      ValueError: a malformed line, a path outside root (the module
        docstring), or a label outside [0, num_classes) (with open_set:
        inside it); the message names the list file and the line.
    """
    root, list_file = os.fspath(root), os.fspath(list_file)
    if not files.isdir(root):
      raise FileNotFoundError(f'Image root {root} does not exist or is not a directory.')
    if not files.isfile(list_file):
      raise FileNotFoundError(f'List file {list_file} does not exist or is not a regular file.')
    paths, labels, line_numbers = _read_lines(list_file)
    if not paths:
      raise ValueError(f'{list_file} lists no images.')
    if open_set:
      if num_classes is None:
        raise ValueError('An open-set list needs num_classes (the training classes).')
      known = (labels >= 0) & (labels < num_classes)
      if known.any():
        line = int(np.flatnonzero(known)[0])
        raise ValueError(
            f'{list_file}: {int(known.sum())} images of the open-set list carry a label of '
            f'the {num_classes} training classes (first: {labels[line]} for {paths[line]}); '
            f"an open-set list holds images of unseen classes, labelled -1 as in OLTR's "
            f'*_open.txt. Point config.data.open_list at an open-set list.'
        )
      labels = np.full_like(labels, -1)
      if class_names is None:
        class_names = tuple(f'class_{c}' for c in range(num_classes))
    if num_classes is None:
      num_classes = int(labels.max()) + 1
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any() and not open_set:
      line = int(np.flatnonzero(bad)[0])
      raise ValueError(
          f'{list_file}: {int(bad.sum())} labels outside [0, {num_classes}) (first: '
          f'{labels[line]} for {paths[line]}). The list file belongs to another data set '
          f'or num_classes is wrong; pass the list file of this data set or the right '
          f'num_classes.'
      )
    listed = paths
    # A leading '/' is relative to the root, as OLTR joins root + path (Places-LT's lists write
    # '/a/abbey/...'); os.path.join would otherwise drop the root.
    paths = [p.lstrip('/') for p in paths]
    if class_folders:
      paths = [p if '/' in p else f'{p.split("_", 1)[0]}/{p}' for p in paths]
    # After the class folder is added: '.._1.JPEG' would become '../.._1.JPEG'.
    _check_confined(list_file, root, listed, paths, line_numbers)
    # Fixed-width bytes pickle as one buffer (437k iNat paths: ~30 MB) and subset cheaply.
    self._paths = np.array([p.encode('utf-8') for p in paths])
    self.labels = labels.astype(np.int32)
    self._lines = line_numbers  # Each record's line in the list file, for messages.
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
    self.open_set = bool(open_set)
    self.skip_corrupt = skip_corrupt
    self.skip_log_dir = None if skip_log_dir is None else os.fspath(skip_log_dir)
    if self.skip_log_dir is not None:
      files.makedirs(self.skip_log_dir)
    self._skipped: set[str] = set()

  def __len__(self) -> int:
    return len(self.labels)

  def path(self, index: int) -> str:
    """Full path of image ``index``."""
    return files.join(self.root, self._paths[index].decode('utf-8'))

  def _where(self, index: int) -> str:
    """'record i, line n of <list file>' for messages."""
    lines = getattr(self, '_lines', None)  # A source pickled before line numbers were kept.
    line = f', line {int(lines[index])}' if lines is not None else ''
    return f'record {index}{line} of {self.list_file}'

  def _decode(self, index: int) -> np.ndarray:
    path = self.path(index)
    try:
      with _open_image(path) as image:
        return np.asarray(image.convert('RGB'), np.uint8)
    except _DECODE_ERRORS as e:
      raise UnreadableImageError(
          f'Cannot read image {path} ({self._where(index)}): '
          f'{type(e).__name__}: {e}. Replace the file, remove its line from the list '
          f'file, or set config.data.skip_corrupt=True to skip unreadable images.'
      ) from e

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, 3) uint8, 'label': int} (the source protocol)."""
    index, image = self.read(source_index.record_number(index, len(self)))
    return {'image': image, 'label': int(self.labels[index])}

  def read(self, index: int) -> tuple[int, np.ndarray]:
    """(the record actually read, its (H, W, 3) uint8 image) for record ``index``.

    That record is ``index`` itself unless its image is unreadable and
    ``skip_corrupt`` is on: then the next readable one in index order.
    """
    if not self.skip_corrupt:
      return index, self._decode(index)
    for step in range(len(self)):
      i = (index + step) % len(self)
      try:
        return i, self._decode(i)
      except UnreadableImageError as e:
        self._record_skip(self.path(i), e)
    raise UnreadableImageError(
        f'No image listed in {self.list_file} under {self.root} ' 'is readable.'
    )

  def encoded(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the file's bytes as uint8, (height, width) from its header): no decode.

    For ``data.decoder='dali'``, which decodes on its own; unreadable files fail
    there (``skip_corrupt`` needs the Pillow decoder).
    """
    path = self.path(int(index))
    try:
      _check_regular_file(path)
      data = files.read_bytes(path)
      with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    except _DECODE_ERRORS as e:
      raise UnreadableImageError(
          f'Cannot read image {path} ({self._where(int(index))}): '
          f'{type(e).__name__}: {e}. Replace the file or remove its line from the list file.'
      ) from e
    return np.frombuffer(data, np.uint8), (height, width)

  def unreadable(self, *, max_workers: int | None = None) -> list[tuple[int, str]]:
    """[(index, error)] of every record whose image cannot be decoded.

    Each file is decoded at a reduced size (libjpeg's DCT scaling through
    Pillow's draft mode), which reads every scan of a JPEG -- so a truncated
    or corrupt file fails -- at a fraction of a full decode's cost; files are
    read in threads (decoding releases the GIL).
    """

    def check(index):
      path = self.path(index)
      try:
        with _open_image(path) as image:
          image.draft('RGB', (64, 64))
          image.load()
        return None
      except _DECODE_ERRORS as e:
        return index, f'{path}: {type(e).__name__}: {e}'

    workers = max_workers or min(32, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      return [bad for bad in pool.map(check, range(len(self))) if bad is not None]

  def _record_skip(self, path: str, error: Exception) -> None:
    if path in self._skipped:
      return
    self._skipped.add(path)
    logging.warning('Skipping unreadable image (skip_corrupt=True): %s', error)
    if self.skip_log_dir is not None:
      log = files.join(self.skip_log_dir, f'skipped-{os.getpid()}.txt')
      if files.is_remote(log):  # No appends in a bucket: this process's list, rewritten whole.
        files.write_text(log, ''.join(p + '\n' for p in sorted(self._skipped)))
        return
      # One short O_APPEND write per skip: lines from one process never interleave,
      # and no handle outlives the call (the source must stay picklable).
      with open(log, 'a', encoding='utf-8') as f:
        f.write(path + '\n')

  def skipped(self) -> set[str]:
    """Paths skipped as unreadable: this process's, plus all logged in skip_log_dir."""
    paths = set(self._skipped)
    if self.skip_log_dir is not None:
      logs = files.listdir(self.skip_log_dir) if files.isdir(self.skip_log_dir) else []
      for name in fnmatch.filter(logs, 'skipped-*.txt'):
        text = files.read_text(files.join(self.skip_log_dir, name))
        paths.update(line for line in text.splitlines() if line.strip())
    return paths

  def subset(self, indices: np.ndarray) -> 'ListFileSource':
    """The same source restricted to ``indices``, in that order."""
    indices = np.asarray(indices, np.int64)
    new = object.__new__(ListFileSource)
    new.__dict__.update(self.__dict__)
    new._paths = self._paths[indices]  # pylint: disable=protected-access
    if getattr(self, '_lines', None) is not None:
      new._lines = self._lines[indices]  # pylint: disable=protected-access
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
      f'{name}: {what} not found: looked for {path}. {layout.source} Put the '
      f'split files ({", ".join(sorted(set(layout.files.values())))}) in the image root '
      f'or pass their directory as list_dir (config.data.list_dir); the image root must '
      f'hold {layout.images}.'
  )


def distinct_splits(name: str) -> list[str]:
  """The splits of data set ``name`` that have a list file of their own: train, test, val.

  A split whose list file an earlier one has is left out: iNaturalist 2018 tests on its
  validation list, so its splits are 'train' and 'test' (what ``load_datasets`` reads).
  """
  files_ = SPLITS[name].files
  seen, splits = set(), []
  for split in ('train', 'test', 'val'):
    if split in files_ and files_[split] not in seen:
      seen.add(files_[split])
      splits.append(split)
  return splits


def split_file(name: str, split: str, root: str, list_dir: str | None = None) -> str | None:
  """Path of the split file of ``split`` of data set ``name`` (None without a directory)."""
  directory = os.fspath(list_dir) if list_dir else os.fspath(root)
  return files.join(directory, SPLITS[name].files[split]) if directory else None


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
    name: 'imagenet_lt', 'places_lt', 'inat2018' or 'mini_imagenet_lt'.
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
  if not root:
    raise FileNotFoundError(
        f'{name}: config.data.data_dir is empty; set it to the image root, which must hold '
        f'{layout.images}.'
    )
  if not files.isdir(root):
    raise FileNotFoundError(_missing_message('image root', root, name, layout))
  list_file = split_file(name, split, root, list_dir)
  if not files.isfile(list_file):
    raise FileNotFoundError(_missing_message('split file', list_file, name, layout))
  source = ListFileSource(
      root,
      list_file,
      num_classes=layout.num_classes,
      mean=layout.mean,
      std=layout.std,
      class_names=layout.class_names or None,
      skip_corrupt=skip_corrupt,
      skip_log_dir=skip_log_dir,
      class_folders=layout.class_folders,
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


OLTR_OPEN_LIST = 'oltr'  # config.data.open_list: the data set's own OLTR open-set list.


def open_list_paths(
    name: str, open_list: str, *, list_dir: str, open_dir: str = ''
) -> tuple[str, str]:
  """Resolves ``config.data.open_list`` / ``open_dir`` to (list file, image folder).

  Args:
    name: the data set (a key of ``SPLITS``).
    open_list: 'oltr' -- the data set's OLTR list (``ImageNet_LT_open.txt``,
      ``Places_LT_open.txt``) -- or the path of a ``relpath label`` list;
      a relative path is relative to list_dir.
    list_dir: the directory of the split files.
    open_dir: the image folder of the list; '' = OLTR's layout, the folder
      named like the list without '.txt', beside it
      (``<list_dir>/ImageNet_LT_open/``).

  Raises:
    ValueError: 'oltr' for a data set without an OLTR open-set list.
  """
  if open_list == OLTR_OPEN_LIST:
    layout = SPLITS[name]
    if not layout.open_file:
      with_list = sorted(n for n, s in SPLITS.items() if s.open_file)
      raise ValueError(
          f"config.data.open_list='{OLTR_OPEN_LIST}': {name} has no OLTR open-set list "
          f'(those of {with_list} do). Give the path of a "relpath label" list of '
          f"open-set images instead, or set config.data.open_list=''."
      )
    open_list = layout.open_file
  list_file = files.join(os.fspath(list_dir), os.fspath(open_list))
  if not open_dir:
    open_dir = os.path.splitext(list_file)[0]
  return list_file, os.fspath(open_dir)


def load_open_list(
    list_file: str,
    root: str,
    *,
    num_classes: int,
    class_names: tuple[str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    expected_size: int = 0,
    skip_corrupt: bool = False,
    skip_log_dir: str | None = None,
) -> ListFileSource:
  """An open-set list (OLTR's ``*_open.txt``) as a source whose labels are all -1.

  Args:
    list_file: the list (labels outside [0, num_classes); OLTR writes -1).
    root: the folder its paths are relative to.
    num_classes, class_names: the training classes (the model's outputs).
    mean, std: the data set's normalisation.
    expected_size: the published number of lines (0: not known); another
      size is logged as a warning.
    skip_corrupt, skip_log_dir: as for ``ListFileSource``.

  Raises:
    FileNotFoundError: the list, its image folder or its first image is
      missing (the message names the path and where to get OLTR's lists).
    ValueError: a malformed line or a training-class label.
  """
  list_file, root = os.fspath(list_file), os.fspath(root)
  where = (
      f"{_OPEN_LIST_SOURCE} Set config.data.open_list to the list ('{OLTR_OPEN_LIST}': the "
      "data set's, in config.data.list_dir) and config.data.open_dir to its image folder "
      "('': the folder named like the list, beside it)."
  )
  if not files.isfile(list_file):
    raise FileNotFoundError(f'Open-set list not found: looked for {list_file}. {where}')
  if not files.isdir(root):
    raise FileNotFoundError(
        f'Image folder of the open-set list {list_file} not found: looked for {root}. {where}'
    )
  source = ListFileSource(
      root,
      list_file,
      num_classes=num_classes,
      mean=mean,
      std=std,
      class_names=class_names,
      skip_corrupt=skip_corrupt,
      skip_log_dir=skip_log_dir,
      open_set=True,
  )
  # One stat: a wrong folder fails here, not after training.
  if not files.isfile(source.path(0)):
    raise FileNotFoundError(
        f'The first image of the open-set list {list_file} is not in its image folder: '
        f'looked for {source.path(0)}. {where}'
    )
  if expected_size and len(source) != expected_size:
    logging.warning(
        '%s lists %d images; the published open-set list has %d.',
        list_file,
        len(source),
        expected_size,
    )
  return source


def write_mini_imagenet_lt_lists(
    imagenet_train: str, out_dir: str, *, imbalance_ratio: float = 100.0, seed: int = 0
) -> dict[str, str]:
  """Writes mini-ImageNet-LT's split files by the official construction, from a seed.

  The construction of Vigneswaran et al. (TailCalibX's
  ``Notebooks/Create_mini-ImageNet-LT.ipynb``; Hasegawa & Sato's copy,
  ``utils/mini_imagenet/create_mini_imagenet.py``, reads ImageNet's train
  folder): for each of the 100 classes (``MINI_IMAGENET_WNIDS``; label = rank
  in sorted order) it draws, at random from the ILSVRC-2012 train images of
  the class, 500 training, 100 validation and 100 test images; the training
  list is then made long-tailed with the exponential profile
  n_c = int(500 * rho^(-c/99)) (``longtail.long_tail_counts``; 10,847 images
  at rho = 100), keeping a random n_c of the 500. Lines are
  ``<wnid>_<n>.JPEG <label>``, class by class; the files are
  ``<1/rho>_{train,val,test}.txt`` (``0.01_*.txt`` at rho = 100, the names
  ``SPLITS['mini_imagenet_lt']`` reads).

  Differences from the official code, which is unseeded (its draws depend on
  numpy's global state and the file system's listing order, so its lists
  cannot be rebuilt): here the files of a class are sorted and drawn with
  ``numpy.random.default_rng(seed)``, so a seed gives the same lists on every
  machine; and the 500/100/100 images are always disjoint -- the official
  code draws them disjointly for 90 classes (a stratified split, then a
  random cap) but by three independent permutations for the 10 classes of
  its ``unequal_classes.txt``, where validation and test images can repeat
  training images.

  Args:
    imagenet_train: the ILSVRC-2012 train folder (``<wnid>/<wnid>_<n>.JPEG``).
    out_dir: where the three lists go (created).
    imbalance_ratio: rho = n_max / n_min (the paper's 100).
    seed: the seed of the draws.

  Returns:
    split -> path of the written list.

  Raises:
    FileNotFoundError: a class folder is missing.
    ValueError: a class has fewer than 700 images.
  """
  imagenet_train = os.fspath(imagenet_train)
  per_class = MINI_IMAGENET_LT_PER_CLASS
  needed = sum(per_class.values())
  counts = longtail.long_tail_counts(len(MINI_IMAGENET_WNIDS), per_class['train'], imbalance_ratio)
  rng = np.random.default_rng(seed)
  lines = {split: [] for split in per_class}
  for label, wnid in enumerate(MINI_IMAGENET_WNIDS):
    folder = os.path.join(imagenet_train, wnid)
    if not os.path.isdir(folder):
      raise FileNotFoundError(
          f'mini-ImageNet-LT: class folder {folder} not found; imagenet_train must be the '
          'ILSVRC-2012 train folder (image-net.org), one folder per wnid.'
      )
    names = sorted(n for n in os.listdir(folder) if n.startswith(wnid + '_'))
    if len(names) < needed:
      raise ValueError(
          f'mini-ImageNet-LT: {folder} holds {len(names)} images named {wnid}_*; the '
          f'construction draws {needed} per class.'
      )
    drawn = [names[i] for i in rng.permutation(len(names))[:needed]]
    start = 0
    for split, n in per_class.items():
      keep = drawn[start : start + n]
      if split == 'train':
        keep = keep[: counts[label]]
      lines[split] += [f'{name} {label}' for name in keep]
      start += n
  os.makedirs(out_dir, exist_ok=True)
  written = {}
  for split, split_lines in lines.items():
    written[split] = os.path.join(os.fspath(out_dir), f'{1.0 / imbalance_ratio}_{split}.txt')
    with open(written[split], 'w', encoding='utf-8') as f:
      f.write('\n'.join(split_lines) + '\n')
  return written
