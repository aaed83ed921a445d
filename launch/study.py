r"""Runs a study, from a checkout: the same command as ``python -m ltjax.study``.

    python launch/study.py --study=configs/studies/fashion_mnist_lt.py --workdir=runs/study
    python launch/study.py --study=... --workdir=... --dry_run          # the cells and states
    python launch/study.py --study=... --workdir=... --print_commands   # one command per cell
    python launch/study.py --study=... --workdir=... --aggregate_only   # the table, now

The flags are those of ``ltjax/study/__main__.py``, which this file runs; it
only makes the checkout's ``ltjax`` importable first, so it works without
installing ltjax.
"""

import os
import sys

# Make the checkout's `ltjax` importable when run as `python launch/study.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from ltjax.study import __main__ as study_main  # pylint: disable=g-import-not-at-top

flags.adopt_module_key_flags(study_main)  # --help lists its flags as this script's own.

if __name__ == '__main__':
  study_main.run()
