r"""Evaluates trained workdirs, from a checkout: the same command as ``python -m ltjax.eval``.

    python launch/eval.py --workdir=runs/default/stage2
    python launch/eval.py --workdir=runs/ce --workdir=runs/lort/stage2 \
        --output=runs/ce_vs_lort

The flags and outputs are those of ``ltjax/eval/__main__.py``, which this file
runs; it only makes the checkout's ``ltjax`` importable first, so it works
without installing ltjax.
"""

import os
import sys

# Make the checkout's `ltjax` importable when run as `python launch/eval.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from ltjax.eval import __main__ as eval_main  # pylint: disable=g-import-not-at-top

flags.adopt_module_key_flags(eval_main)  # --help lists its flags as this script's own.

if __name__ == '__main__':
  eval_main.run()
