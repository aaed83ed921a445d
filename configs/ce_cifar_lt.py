r"""Cross-entropy on CIFAR-10/100-LT: the baseline row of every CIFAR table.

The LDAM-DRW training recipe (Cao et al., NeurIPS 2019; official code
kaidic/LDAM-DRW, see docs/references.md, 'LDAM-DRW'), which
DDC, VS-Loss and Saddle reuse: ResNet-32 ([5,5,5], option-A shortcuts), batch
128, SGD lr 0.1, momentum 0.9, wd 2e-4, 200 epochs, linear warm-up lr*e/5 over
the first 5 epochs, lr x0.01 from epoch 160 and x1e-4 from epoch 180.
Reference numbers (DDC's 200-epoch reproduction, wang22ti/DDC README):
CIFAR-100-LT IR 100: 38.06, IR 10: 56.73.

DATA_DIR holds CIFAR's python-pickle folder (cifar-100-python / cifar-10-batches-py, as
torchvision downloads it); add --config.data.name=tfds to read a prepared TFDS set instead
(README, "Data"):

    python launch/train.py \
      --config=configs/ce_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/ce_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio), profile (exp, step).
"""

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset='cifar100', ir=100.0, profile='exp')
  config = base.get_config()
  common.cifar_lt(config, dataset=args.dataset, imbalance_ratio=args.ir, profile=args.profile)
  config.model.name = 'resnet32'
  config.batch_size = 128
  config.num_epochs = 200
  config.eval_every_epochs = 10
  config.optim.lr = 0.1
  config.optim.weight_decay = 2e-4
  config.schedule.name = 'warmup_multistep'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 1  # LDAM computes the lr from e = epoch + 1.
  config.schedule.warmup_epochs = 5
  config.schedule.warmup_start_factor = 0.0
  config.schedule.milestones = (161, 181)
  config.schedule.gamma = 0.01
  return config
