r"""Logits retargeting (LORT; public code "LOS") on CIFAR-100-LT: CE + WD, then retargeted re-training.

Stage 1 (official code bilibili/LOS, main_stage1.py; docs/references.md,
'LORT: paper and LOS code'): the weight-balancing stage-1 recipe for 200 epochs --
"ResNet-34" with a 3x3 stem, CE, batch 64, SGD lr 0.01, momentum 0.9, weight
decay 5e-3, cosine; first-n_c subsampling; flip test-time averaging.
Stage 2: only the classifier (W, b) trains, BN statistics keep updating (train
mode, as the official code), instance-balanced sampling, the retargeted loss
with delta = 0.98 (the LOS code's label_smoothing, target 1 - delta + delta/K on
the true class), SGD lr 5e-4, momentum 0.9, no weight decay, cosine over 20
epochs. No ltjax number yet; the paper (Lu et al., arXiv:2403.00250, Table 2)
reports 54.9 / 58.8 / 69.7 on CIFAR-100-LT IR 100 / 50 / 10.

    python launch/train.py --config=configs/lort_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/lort_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio), delta.
"""

from ltjax.configs import base
from ltjax.configs import common
from ltjax.configs import wb_cifar_lt


def get_config(arg=None):
  args = common.parse_arg(arg, dataset='cifar100', ir=100.0, delta=0.98)
  config = wb_cifar_lt.get_config(f'dataset={args.dataset},ir={args.ir}')
  config.num_epochs = 200

  s2 = config.stage2
  s2.num_epochs = 20
  s2.max_norm = 0.0
  s2.sampler = 'instance'
  s2.loss = base.loss_config()
  s2.loss.name = 'lort'
  s2.loss.lort_delta = args.delta
  s2.optim.lr = 5e-4
  s2.optim.weight_decay = 0.0
  return config
