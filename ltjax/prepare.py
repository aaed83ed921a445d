r"""Prepares a list-file data set's images as records: the fast input path.

    python -m ltjax.prepare --config=configs/ce_imagenet_lt.py \
        --config.data.data_dir=/data/imagenet --records_dir=/data/imagenet_lt_records
    python -m ltjax.train --config=configs/ce_imagenet_lt.py \
        --config.data.data_dir=/data/imagenet \
        --config.data.records_dir=/data/imagenet_lt_records --workdir=runs/ce

(``python launch/prepare.py ...`` in a checkout is the same command.) Every
split of the recipe's data set (``config.data.name``: ImageNet-LT, Places-LT,
iNaturalist 2018, mini-ImageNet-LT) is decoded once, resized so its shorter
side is ``--shorter_side`` (default: the recipe's evaluation resize,
``image_size * 256 / 224``) and written in list order into ArrayRecord files
under ``--records_dir/<split>/`` (``ltjax.data.records`` describes the format
and what it changes). A progress bar runs on a terminal, log lines otherwise.

Interrupted (preemption, Ctrl-C), the same command continues from the
finished shards. At the end each split is verified against its list file
(record count, label histogram, labels record by record); ``--verify`` reads
every record of finished splits back again. Exit codes: 0 done; 2 bad input
(missing data, an unreadable image without ``--config.data.skip_corrupt``,
records prepared differently in ``--records_dir``).

Disk: ``raw`` (the default) stores pixels, about 0.26 MB per image at 256 px
(ImageNet-LT train: ~30 GB; iNaturalist 2018 train: ~115 GB); ``jpeg`` about
a tenth of that, decoded at every read.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from ltjax import cli
from ltjax.data import listfile
from ltjax.data import records
from ltjax.train import stopping

config_flags.DEFINE_config_file(
    'config', None, 'A recipe (configs/*.py) of a list-file data set.', lock_config=True
)
flags.DEFINE_string('records_dir', None, 'Where the records go (a local or mounted path).')
flags.DEFINE_list('splits', [], "Splits to prepare (default: all of the data set's).")
flags.DEFINE_enum('format', 'raw', records.FORMATS, 'raw: pixels (fastest); jpeg: ~10x smaller.')
flags.DEFINE_integer(
    'shorter_side',
    -1,
    "Resize the shorter side of larger images to this; 0 keeps full size; -1: the recipe's "
    'evaluation resize, round(config.data.image_size * 256 / 224).',
)
flags.DEFINE_integer('jpeg_quality', 90, 'Quality of re-encoded images (--format=jpeg).')
flags.DEFINE_integer('images_per_shard', 1024, 'Records per ArrayRecord file.')
flags.DEFINE_integer('workers', os.cpu_count() or 1, 'Processes writing shards.')
flags.DEFINE_bool('verify', False, 'Only read every record of the finished splits back.')
flags.mark_flags_as_required(['config', 'records_dir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  try:
    prepare(flags.FLAGS.config)
  except (records.RecordsError, listfile.UnreadableImageError, FileNotFoundError, ValueError) as e:
    print(f'\nError ({type(e).__name__}): {e}', file=sys.stderr, flush=True)
    sys.exit(stopping.EXIT_BAD_INPUT)


def prepare(config) -> None:
  """Prepares (or verifies, with --verify) the records of the recipe's data set."""
  data = config.data
  if data.name not in listfile.SPLITS:
    raise app.UsageError(
        f'config.data.name={data.name!r} is not a list-file data set; prepared records are for '
        f'{sorted(listfile.SPLITS)} (the other sources are in memory or already ArrayRecord).'
    )
  splits = flags.FLAGS.splits or listfile.distinct_splits(data.name)
  if flags.FLAGS.verify:
    for split in splits:
      meta = records.verify(flags.FLAGS.records_dir, split)
      logging.info('%s %s: %d records verified.', data.name, split, meta['num_records'])
    return
  shorter_side = flags.FLAGS.shorter_side
  if shorter_side < 0:
    shorter_side = round(data.image_size * 256 / 224)
  options = records.PrepareOptions(
      image_format=flags.FLAGS.format,
      shorter_side=shorter_side,
      jpeg_quality=flags.FLAGS.jpeg_quality,
      images_per_shard=flags.FLAGS.images_per_shard,
  )
  for split in splits:
    source = listfile.load_list_split(
        data.name,
        split,
        root=data.data_dir,
        list_dir=data.list_dir or None,
        skip_corrupt=data.skip_corrupt,
    )
    meta = records.prepare_split(
        source,
        flags.FLAGS.records_dir,
        dataset=data.name,
        split=split,
        options=options,
        workers=flags.FLAGS.workers,
    )
    logging.info(
        '%s %s: %d records, %.2f GB, verified against %s%s.',
        data.name,
        split,
        meta['num_records'],
        meta['bytes'] / 1e9,
        source.list_file,
        f' ({len(meta["replaced"])} unreadable images replaced)' if meta['replaced'] else '',
    )
  print(
      f'Train from the records with --config.data.records_dir={flags.FLAGS.records_dir}',
      flush=True,
  )


def run():
  """Resolves ``--config`` (ltjax.config_files), then runs ``main`` as an absl app."""
  cli.run(main, 'config')


if __name__ == '__main__':
  run()
