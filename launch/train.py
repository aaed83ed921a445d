r"""Trains and evaluates a config, from a checkout: the same command as ``python -m ltjax.train``.

    python launch/train.py --config=configs/default.py --workdir=runs/default
    python launch/train.py --config=configs/default.py --config.optim.lr=0.02 \
        --workdir=runs/lr002

The flags, the resumption rules and the exit codes (0 finished; 1 unexpected
error; 2 bad input; 3 diverged; 75 stopped with the checkpoint saved) are
those of ``ltjax/train/__main__.py``, which this file runs; it only makes the
checkout's ``ltjax`` importable first, so it works without installing ltjax.
"""

import os
import sys

# Make the checkout's `ltjax` importable when run as `python launch/train.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from ltjax.train import __main__ as train_main  # pylint: disable=g-import-not-at-top

flags.adopt_module_key_flags(train_main)  # --help lists its flags as this script's own.

if __name__ == '__main__':
  train_main.run()
