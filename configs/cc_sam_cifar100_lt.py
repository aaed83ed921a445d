r"""CC-SAM on CIFAR-100-LT with the official settings: configs/cc_sam_cifar_lt.py, dataset=cifar100.

    python launch/train.py --config=configs/cc_sam_cifar100_lt.py:ir=200 \
      --config.data.data_dir=DATA_DIR --workdir=runs/cc_sam_cifar100_lt_ir200

Argument: ir (imbalance ratio, default 100; the released JSONs use 200).
"""

from ltjax.configs import cc_sam_cifar_lt
from ltjax.configs import common

ARGUMENTS = dict(ir=cc_sam_cifar_lt.ARGUMENTS['ir'])


def settings(args):
  return cc_sam_cifar_lt.settings(
      common.parse_arg(f'dataset=cifar100,ir={args.ir}', **cc_sam_cifar_lt.ARGUMENTS)
  )


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
