"""ltjax's recipes: one config file per paper setting, each a ``get_config()`` over base.py.

They live here, in ``configs/`` at the top of the repository, so that the
commands of the README (``python launch/train.py --config=configs/x.py``) read
them from a checkout; the same files are installed with the wheel as the package
``ltjax.configs`` (``ltjax/configs`` is a link to this folder), so that
``python -m ltjax.train --config=configs/x.py`` finds them from any directory
(``ltjax.config_files``). A recipe imports another as ``from ltjax.configs
import base``, which works in both places.

A paper recipe is a table of settings, each with its source (``provenance.py``:
paper, official code at a commit, protocol, or "assumed: why"); ``common.py``
holds the rows the recipes share (CIFAR-LT, the large-scale lists).
"""
