r"""CC-SAM on CIFAR-10-LT with the official settings: configs/cc_sam_cifar_lt.py, dataset=cifar10.

    python launch/train.py --config=configs/cc_sam_cifar10_lt.py:ir=200 \
      --config.data.data_dir=DATA_DIR --workdir=runs/cc_sam_cifar10_lt_ir200

Argument: ir (imbalance ratio, default 100; the released JSONs use 200).
"""

from ltjax.configs import cc_sam_cifar_lt
from ltjax.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, ir=100.0)
  return cc_sam_cifar_lt.get_config(f'dataset=cifar10,ir={args.ir}')
