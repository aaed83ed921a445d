r"""Prepared records: a list-file split's images, pre-resized, in ArrayRecord files.

Reading ImageNet-LT or iNaturalist 2018 from their JPEG files costs a
full-size decode per image (375x500 for ImageNet, up to 800 px for
iNaturalist) before RandomResizedCrop throws most of the pixels away. Like
FFCV's pre-resized files (Leclerc et al., CVPR 2023), ``python -m ltjax.prepare``
decodes every image of a split once, resizes its shorter side to
``shorter_side`` (torchvision ``Resize``, ``ltjax.data.augment.resize_shorter``;
an image already that small is kept as it is) and writes the result into
ArrayRecord files (Google's random-access record format, which grain reads
natively). Training then reads a record instead of a file: one file per
~1,000 images instead of one per image (far fewer files on a bucket or NFS),
and no decode at all for the default ``raw`` format.

Layout of ``<records_dir>/<split>/``::

    <split>.array_record-00000-of-00114 ...   the records, in list-file order
    shard-00000-of-00114.json ...              a shard's manifest: written after
                                               the shard was read back and checked
    labels.npy                                 (N,) int32, the records' labels
    meta.json                                  written last: the split is complete
                                               and verified

A record is ``HEADER`` (magic, label, height, width, channels, format)
followed by the image: its uint8 RGB pixels (``raw``) or a JPEG file
(``jpeg``: resized images re-encoded at ``jpeg_quality``, others stored as the
original file's bytes).

Semantics. Record i is line i of the list file: the same labels, the same
order, so samplers, long-tail subsets and the batch of step s are unchanged
(a pure function of (seed, s)). With ``data.skip_corrupt`` an unreadable image
is replaced, as ``ListFileSource`` does, by the next readable one with its
label; ``meta.json`` lists those records.
  - Test transform: with ``raw`` records and ``shorter_side`` equal to the
    evaluation resize (256 for 224 crops), ``Resize(256) + CenterCrop(224)``
    of a record is bit-identical to that of the original file: the record
    *is* the resized image, which the transform does not resample again.
  - Train transform: RandomResizedCrop draws the same box distribution (area
    and aspect fractions of the image), but cuts it from the pre-resized
    image, so a small crop is upsampled from fewer pixels (a 0.08-area crop of
    a 256x341 record is about 83 px wide; of the 375x500 original, 122 px).
    This is FFCV's trade-off; ``--shorter_side`` larger (or 0: full size)
    buys it back at the cost of decode time and disk.
  - ``jpeg`` records re-encode the resized images once (quality 90 by
    default), smaller on disk (about a tenth of ``raw``) but decoded at
    every read.

Resumable: shards are written and checked independently (a shard file is
renamed into place only when complete, its manifest written after a
read-back); rerunning the command skips finished shards. Verified: the
finished split's record count and labels are compared with the list file
(label histogram and record by record), and ``meta.json`` records the list
file's SHA-256 so that training from records of another list fails.

ArrayRecord files are read and written through local paths: a bucket needs a
FUSE mount (Cloud Storage FUSE), as TFDS's ArrayRecord files do.
"""

import concurrent.futures
import dataclasses
import hashlib
import io
import math
import multiprocessing
import os
import struct
import sys
import time

from absl import logging
import numpy as np
from PIL import Image

from ltjax import files
from ltjax.data import augment
from ltjax.data import listfile
from ltjax.data import source_index

FORMATS = ('raw', 'jpeg')
# magic, label (int32), height, width (uint16), channels, format (uint8).
HEADER = struct.Struct('<4siHHBB')
MAGIC = b'LTR1'
_JPEG_START = b'\xff\xd8\xff'  # What Pillow recognises a JPEG file by.
_FORMAT_CODES = {'raw': 0, 'jpeg': 1}
META = 'meta.json'
LABELS = 'labels.npy'
VERSION = 1
# group_size 1: every record its own chunk, so a random read decodes one record.
_WRITER_OPTIONS = 'group_size:1'


class RecordsError(ValueError):
  """Prepared records that are missing, unfinished or do not match the data set."""


def shard_name(split: str, shard: int, num_shards: int) -> str:
  return f'{split}.array_record-{shard:05d}-of-{num_shards:05d}'


def manifest_name(shard: int, num_shards: int) -> str:
  return f'shard-{shard:05d}-of-{num_shards:05d}.json'


def encode(image: np.ndarray, label: int, image_format: str, payload: bytes | None = None) -> bytes:
  """One record: HEADER + the uint8 (H, W, 3) pixels ('raw') or ``payload`` (a JPEG file)."""
  height, width, channels = image.shape
  header = HEADER.pack(MAGIC, int(label), height, width, channels, _FORMAT_CODES[image_format])
  if image_format == 'raw':
    return header + np.ascontiguousarray(image, np.uint8).tobytes()
  return header + payload


def decode_header(record: bytes) -> tuple[int, int, int, int, str]:
  """(label, height, width, channels, format) of a record."""
  magic, label, height, width, channels, code = HEADER.unpack_from(record)
  if magic != MAGIC:
    raise RecordsError(f'Not an ltjax record (magic {magic!r}, expected {MAGIC!r}).')
  return label, height, width, channels, FORMATS[code]


def decode(record: bytes) -> tuple[np.ndarray, int]:
  """(uint8 (H, W, 3) image, label) of a record."""
  label, height, width, channels, image_format = decode_header(record)
  payload = memoryview(record)[HEADER.size :]
  if image_format == 'raw':
    return np.frombuffer(payload, np.uint8).reshape(height, width, channels), label
  with Image.open(io.BytesIO(payload)) as image:
    return np.asarray(image.convert('RGB'), np.uint8), label


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with files.open_file(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _array_record():
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  return array_record_module


def _local(path: str, what: str) -> str:
  if files.is_remote(path):
    raise RecordsError(
        f'{what} {path} is a URL; ArrayRecord files are read and written through local paths. '
        'Mount the bucket (e.g. Cloud Storage FUSE: gcsfuse BUCKET /mnt/BUCKET) and pass the '
        'mounted path.'
    )
  return os.fspath(path)


# ----------------------------------------------------------------------------
# Writing.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
  """How ``prepare_split`` stores images.

  Attributes:
    image_format: 'raw' (uint8 pixels: no decode when read) or 'jpeg'.
    shorter_side: resize images whose shorter side is longer to this
      (torchvision ``Resize``); 0 keeps every image at full size.
    jpeg_quality: quality of re-encoded ('jpeg') images.
    images_per_shard: records per ArrayRecord file.
  """

  image_format: str = 'raw'
  shorter_side: int = 256
  jpeg_quality: int = 90
  images_per_shard: int = 1024

  def __post_init__(self):
    if self.image_format not in FORMATS:
      raise ValueError(f'Unknown record format {self.image_format!r}; valid: {FORMATS}.')
    if self.shorter_side < 0 or self.images_per_shard < 1:
      raise ValueError('shorter_side must be >= 0 and images_per_shard >= 1.')


def _stored(source: listfile.ListFileSource, index: int, options: PrepareOptions):
  """(record bytes, label, the record actually read) of list line ``index``."""
  read_index, image = source.read(index)
  label = int(source.labels[read_index])
  height, width = image.shape[:2]
  resized = options.shorter_side and min(height, width) > options.shorter_side
  if resized:
    image = np.asarray(augment.resize_shorter(image, options.shorter_side), np.uint8)
  if options.image_format == 'raw':
    return encode(image, label, 'raw'), label, read_index
  original = None if resized else source.encoded(read_index)[0]
  if original is not None and original[:3].tobytes() == _JPEG_START:
    payload = original.tobytes()  # The original file: no second lossy encoding.
  else:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, 'JPEG', quality=options.jpeg_quality)
    payload = buffer.getvalue()
  return encode(image, label, 'jpeg', payload), label, read_index


def _write_shard(source, split_dir: str, split: str, shard: int, num_shards: int, options):
  """Writes, reads back and checks one shard; returns its manifest."""
  start = shard * options.images_per_shard
  stop = min(start + options.images_per_shard, len(source))
  path = os.path.join(split_dir, shard_name(split, shard, num_shards))
  partial = path + '.partial'
  labels, replaced = [], []
  writer = _array_record().ArrayRecordWriter(partial, _WRITER_OPTIONS)
  try:
    for index in range(start, stop):
      record, label, read_index = _stored(source, index, options)
      writer.write(record)
      labels.append(label)
      if read_index != index:
        replaced.append([index, read_index, source.path(index), source.path(read_index)])
  finally:
    writer.close()
  read_back = _read_labels(partial)
  if read_back != labels:
    raise RecordsError(
        f'{partial}: read back {len(read_back)} records that differ from those written.'
    )
  os.replace(partial, path)
  manifest = {
      'shard': shard,
      'start': start,
      'stop': stop,
      'labels': labels,
      'replaced': replaced,
      'bytes': os.path.getsize(path),
  }
  files.write_json(os.path.join(split_dir, manifest_name(shard, num_shards)), manifest)
  return manifest


def _read_labels(path: str) -> list[int]:
  """The labels of every record of one ArrayRecord file, reading each record."""
  reader = _array_record().ArrayRecordReader(path, 'readahead_buffer_size:0')
  try:
    return [decode_header(r)[0] for r in reader.read_all()]
  finally:
    reader.close()


def _progress(total: int, desc: str):
  """A tqdm bar on a terminal; log lines every 5 % otherwise (batch jobs)."""
  if sys.stderr.isatty():
    import tqdm  # pylint: disable=g-import-not-at-top

    return tqdm.tqdm(total=total, desc=desc, unit='img', smoothing=0.1)
  return _LogProgress(total, desc)


class _LogProgress:
  """tqdm's update/close with a log line every 5 % (no carriage returns in job logs)."""

  def __init__(self, total: int, desc: str):
    self.total, self.desc, self.done, self.logged = total, desc, 0, -1
    self.start = time.monotonic()

  def update(self, n: int) -> None:
    self.done += n
    step = int(20 * self.done / max(self.total, 1))
    if step > self.logged:
      self.logged = step
      rate = self.done / max(time.monotonic() - self.start, 1e-9)
      logging.info('%s: %d/%d images (%.0f images/s)', self.desc, self.done, self.total, rate)

  def close(self) -> None:
    pass


def prepare_split(
    source: listfile.ListFileSource,
    records_dir: str,
    *,
    dataset: str,
    split: str,
    options: PrepareOptions = PrepareOptions(),
    workers: int = 1,
    stop_after_shards: int | None = None,
) -> dict:
  """Writes (or completes) ``<records_dir>/<split>/`` from a list-file source.

  Args:
    source: the split's list-file source (its ``skip_corrupt`` decides
      whether an unreadable image fails the command or is replaced).
    records_dir: the records directory (local or a mounted bucket).
    dataset: the data set's name (``config.data.name``), recorded and checked
      when training reads the records.
    split: 'train', 'val' or 'test'.
    options: how images are stored; a resumed split must keep them.
    workers: processes writing shards (each decodes and encodes its images).
    stop_after_shards: stop after writing this many new shards (tests of
      resumption: the split stays unfinished).

  Returns:
    The split's meta.json content (None when stopped early).

  Raises:
    RecordsError: the folder holds records of other options or another list
      file; a shard's read-back or the final verification fails.
  """
  split_dir = os.path.join(_local(records_dir, 'The records directory'), split)
  os.makedirs(split_dir, exist_ok=True)
  num_shards = math.ceil(len(source) / options.images_per_shard)
  plan = {
      'version': VERSION,
      'dataset': dataset,
      'split': split,
      'list_file': source.list_file,
      'list_sha256': sha256(source.list_file),
      'num_records': len(source),
      'num_shards': num_shards,
      **dataclasses.asdict(options),
  }
  plan_path = os.path.join(split_dir, 'plan.json')
  if os.path.exists(plan_path):
    previous = files.read_json(plan_path)
    changed = {
        k: (previous.get(k), v)
        for k, v in plan.items()
        if previous.get(k) != v and k != 'list_file'
    }
    if changed:
      raise RecordsError(
          f'{split_dir} holds records prepared differently ({changed}, as (there, now)). '
          'Prepare into another directory, or delete this one to start again.'
      )
  else:
    files.write_json(plan_path, plan)
  done = {
      s
      for s in range(num_shards)
      if os.path.exists(os.path.join(split_dir, manifest_name(s, num_shards)))
  }
  todo = [s for s in range(num_shards) if s not in done]
  if stop_after_shards is not None:
    todo = todo[:stop_after_shards]
  progress = _progress(len(source), f'{dataset} {split}')
  progress.update(
      sum(min(options.images_per_shard, len(source) - s * options.images_per_shard) for s in done)
  )
  if workers > 1 and len(todo) > 1:
    # Spawned, not forked: the caller may have started JAX's threads (a fork can deadlock).
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
      futures = [
          pool.submit(_write_shard, source, split_dir, split, s, num_shards, options) for s in todo
      ]
      for future in concurrent.futures.as_completed(futures):
        manifest = future.result()
        progress.update(manifest['stop'] - manifest['start'])
  else:
    for s in todo:
      manifest = _write_shard(source, split_dir, split, s, num_shards, options)
      progress.update(manifest['stop'] - manifest['start'])
  progress.close()
  if len(done) + len(todo) < num_shards:
    return None
  return _finish(source, split_dir, plan)


def _finish(source, split_dir: str, plan: dict) -> dict:
  """Verifies a split whose shards are all written; writes labels.npy and meta.json."""
  num_shards = plan['num_shards']
  manifests = [
      files.read_json(os.path.join(split_dir, manifest_name(s, num_shards)))
      for s in range(num_shards)
  ]
  labels = np.asarray([label for m in manifests for label in m['labels']], np.int32)
  replaced = [r for m in manifests for r in m['replaced']]
  reader = _array_record()
  counted = 0
  for s in range(num_shards):
    shard = reader.ArrayRecordReader(
        os.path.join(split_dir, shard_name(plan['split'], s, num_shards))
    )
    try:
      counted += shard.num_records()
    finally:
      shard.close()
  expected = source.labels.copy()  # The list's labels, replaced records' substituted.
  for index, read_index, _, _ in replaced:
    expected[index] = source.labels[read_index]
  problems = []
  histogram = np.bincount(labels, minlength=source.num_classes)
  if counted != len(source) or len(labels) != len(source):
    problems.append(f'{counted} records (manifests: {len(labels)}) for {len(source)} list lines')
  else:
    if not np.array_equal(histogram, np.bincount(expected, minlength=source.num_classes)):
      problems.append("the label histogram differs from the list file's")
    differ = np.flatnonzero(labels != expected)
    if len(differ):
      problems.append(f'labels differ from the list file at records {differ[:5].tolist()}')
  if problems:
    raise RecordsError(
        f'{split_dir} does not match {source.list_file}: {"; ".join(problems)}. Delete the '
        'folder and prepare it again.'
    )
  np.save(os.path.join(split_dir, LABELS), labels, allow_pickle=False)
  meta = {
      **plan,
      'num_classes': source.num_classes,
      'class_names': list(source.class_names),
      'mean': list(source.mean),
      'std': list(source.std),
      'label_histogram': histogram.tolist(),
      'replaced': replaced,
      'bytes': sum(m['bytes'] for m in manifests),
  }
  files.write_json(os.path.join(split_dir, META), meta)
  return meta


# ----------------------------------------------------------------------------
# Reading.
# ----------------------------------------------------------------------------


class RecordsSource:
  """Random-access source over a prepared split (the protocol of ``ArrayDataset``).

  Attributes:
    split_dir: ``<records_dir>/<split>``.
    labels: (N,) int32 labels (labels.npy; no record is read to build them).
    num_classes, mean, std, class_names: as recorded from the list-file source.
    meta: the split's meta.json.
  """

  def __init__(self, split_dir: str, meta: dict, labels: np.ndarray, indices=None):
    self.split_dir = split_dir
    self.meta = meta
    self._indices = None if indices is None else np.asarray(indices, np.int64)
    self.labels = labels if indices is None else labels[self._indices]
    self.num_classes = int(meta['num_classes'])
    self.mean = tuple(meta['mean'])
    self.std = tuple(meta['std'])
    self.class_names = tuple(meta['class_names'])
    self._all_labels = labels
    self._reader = None  # Opened per process on first read (sources are pickled to workers).

  def _source(self):
    if self._reader is None:
      from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top

      n = self.meta['num_shards']
      paths = [os.path.join(self.split_dir, shard_name(self.meta['split'], s, n)) for s in range(n)]
      self._reader = array_record_data_source.ArrayRecordDataSource(paths)
    return self._reader

  def __len__(self) -> int:
    return len(self.labels)

  def _record(self, index: int) -> bytes:
    """The stored record of this source's record ``index``."""
    return self._source()[source_index.record_number(index, len(self), self._indices)]

  def __getitem__(self, index: int) -> dict:
    """One record {'image': (H, W, 3) uint8, 'label': int} (the source protocol)."""
    image, label = decode(self._record(index))
    return {'image': image, 'label': label}

  def encoded(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(the record's JPEG file as uint8, (height, width)) of a 'jpeg' split (``decoder='dali'``)."""
    record = self._record(index)
    _, height, width, _, image_format = decode_header(record)
    if image_format != 'jpeg':
      raise RecordsError(
          f'{self.split_dir} holds raw pixels, which need no decoder: use '
          "config.data.decoder='pillow' with raw records, or prepare --format=jpeg records "
          'for DALI.'
      )
    return np.frombuffer(record, np.uint8, offset=HEADER.size), (height, width)

  def subset(self, indices: np.ndarray) -> 'RecordsSource':
    """The same source restricted to ``indices``, in that order."""
    indices = np.asarray(indices, np.int64)
    base = indices if self._indices is None else self._indices[indices]
    return RecordsSource(self.split_dir, self.meta, self._all_labels, base)

  def __getstate__(self) -> dict:
    state = dict(self.__dict__)
    state['_reader'] = None
    return state

  def __repr__(self) -> str:
    return f'RecordsSource({self.split_dir!r}, {len(self)} records)'


def prepare_command(dataset: str, records_dir: str) -> str:
  return (
      f'python -m ltjax.prepare --config=<your recipe> --records_dir={records_dir} '
      f'(data set {dataset})'
  )


def load_records_split(
    records_dir: str, dataset: str, split: str, *, list_file: str | None = None
) -> RecordsSource:
  """The prepared ``split`` of ``dataset`` in ``records_dir``.

  Args:
    records_dir: the directory ``python -m ltjax.prepare`` wrote.
    dataset: ``config.data.name``; must be the one the records were made from.
    split: 'train', 'val' or 'test'.
    list_file: the split's list file, if present: its SHA-256 must be the
      one the records were prepared from.

  Raises:
    RecordsError: no records, unfinished records, or records of another data
      set or list file (each message says how to fix it).
  """
  split_dir = os.path.join(_local(records_dir, 'config.data.records_dir'), split)
  meta_path = os.path.join(split_dir, META)
  if not os.path.exists(meta_path):
    state = (
        'is unfinished (an interrupted prepare): rerun the same command to complete it'
        if os.path.exists(os.path.join(split_dir, 'plan.json'))
        else 'does not exist: prepare it'
    )
    raise RecordsError(
        f'Prepared records {split_dir} {state}: {prepare_command(dataset, records_dir)}; or '
        'set config.data.records_dir="" to read the image files.'
    )
  meta = files.read_json(meta_path)
  if meta.get('version') != VERSION:
    raise RecordsError(
        f'{split_dir} holds records of format version {meta.get("version")}; this ltjax reads '
        f'version {VERSION}. Prepare them again: {prepare_command(dataset, records_dir)}.'
    )
  if meta['dataset'] != dataset:
    raise RecordsError(
        f'{split_dir} holds {meta["dataset"]} records, not {dataset} (config.data.name): point '
        'config.data.records_dir at the records of this data set.'
    )
  now = sha256(list_file) if list_file is not None and files.isfile(list_file) else None
  if now is not None and now != meta['list_sha256']:
    raise RecordsError(
        f'{split_dir} was prepared from another version of the list file {list_file} (SHA-256 '
        f'{meta["list_sha256"][:12]}..., now {now[:12]}...). Prepare again into a '
        f'new directory: {prepare_command(dataset, "<new dir>")}.'
    )
  labels = np.load(os.path.join(split_dir, LABELS), allow_pickle=False)
  if len(labels) != meta['num_records']:
    raise RecordsError(
        f'{split_dir}: {LABELS} has {len(labels)} labels for {meta["num_records"]} records.'
    )
  return RecordsSource(split_dir, meta, labels)


def verify(records_dir: str, split: str) -> dict:
  """Reads every record of a finished split back; its labels must be labels.npy's.

  Returns the split's meta.json content. Raises RecordsError naming the first
  shard that differs.
  """
  split_dir = os.path.join(_local(records_dir, 'The records directory'), split)
  meta = files.read_json(os.path.join(split_dir, META))
  labels = np.load(os.path.join(split_dir, LABELS), allow_pickle=False)
  n = meta['num_shards']
  offset = 0
  for s in range(n):
    path = os.path.join(split_dir, shard_name(split, s, n))
    if not os.path.exists(path):
      raise RecordsError(f'{path} is missing. Delete {split_dir} and prepare it again.')
    read = _read_labels(path)
    if read != labels[offset : offset + len(read)].tolist():
      raise RecordsError(
          f'{path}: its records do not match {LABELS}. Delete {split_dir} and prepare it again.'
      )
    offset += len(read)
  if offset != meta['num_records']:
    raise RecordsError(f'{split_dir}: {offset} records, meta.json says {meta["num_records"]}.')
  return meta
