r"""Prepares a data set's records, from a checkout: the same command as ``python -m ltjax.prepare``.

    python launch/prepare.py --config=configs/ce_imagenet_lt.py \
        --config.data.data_dir=/data/imagenet --records_dir=/data/imagenet_lt_records

The flags and exit codes are those of ``ltjax/prepare.py``, which this file
runs; it only makes the checkout's ``ltjax`` importable first.
"""

import os
import sys

# Make the checkout's `ltjax` importable when run as `python launch/prepare.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from ltjax import prepare  # pylint: disable=g-import-not-at-top

flags.adopt_module_key_flags(prepare)  # --help lists its flags as this script's own.

if __name__ == '__main__':
  prepare.run()
