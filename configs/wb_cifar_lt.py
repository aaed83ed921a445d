r"""Weight balancing (Alshammari et al., CVPR 2022) on CIFAR-100-LT: WD, then CB + WD + MaxNorm.

Stage 1 (official demo, ShadeAlsha/LTR-weight-balancing; docs/references.md,
'Weight balancing: stage 1'): the WB "ResNet-34" (3x3 stem, no max-pool), plain
CE, batch 64, SGD lr 0.01, momentum 0.9, weight decay 5e-3 on every
parameter, cosine over 320 epochs stepped at each epoch start; the first n_c
images of each class in file order (no shuffle), flip test-time averaging.
Stage 2 (docs/references.md, 'Weight balancing: stage 2'): everything but the
classifier frozen (BN statistics keep updating, as the official code's train
mode), the class-balanced loss in the
demo's softmax-BCE form (beta 0.9999), SGD lr 0.01, weight decay 0.1, cosine
over 10 epochs, projected MaxNorm with thresholds min + 0.1 (max - min) of the
stage-1 class-vector norms, applied every step (the paper; the demo projects
once per epoch: --config.stage2.max_norm_per_epoch=True).
Reference numbers (IR 100): stage 1 47.18 (demo log, best on test, no TTA),
stage 2 51.98 (demo log, no TTA), > 52 with TTA (README); paper 53.35.

    python launch/train.py --config=configs/wb_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/wb_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio), profile (exp, step).
"""

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset='cifar100', ir=100.0, profile='exp')
  config = base.get_config()
  common.cifar_lt(config, dataset=args.dataset, imbalance_ratio=args.ir, profile=args.profile)
  config.data.selection = 'first'
  config.model.name = 'resnet34_cifar'
  config.num_epochs = 320
  config.eval_every_epochs = 10
  weight_balancing(config)
  return config


def weight_balancing(config):
  """The two stages of weight balancing (the official demo's settings), on any data and model.

  Stage 1: CE, batch 64, SGD lr 0.01, momentum 0.9, weight decay 5e-3, cosine
  stepped at each epoch start (epochs: the caller's); flip averaging at test
  time. Stage 2 (10 epochs): only the classifier, BN in train mode, the
  softmax-BCE class-balanced loss (beta 0.9999), weight decay 0.1, MaxNorm 0.1
  per step, the same cosine.
  """
  config.eval.flip_tta = True
  config.batch_size = 64
  config.optim.lr = 0.01
  config.optim.weight_decay = 5e-3
  config.schedule.name = 'cosine'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 1

  s2 = config.stage2
  s2.num_epochs = 10
  s2.init_from = 'best'
  s2.head = 'keep'
  s2.trainable = 'head/.*'
  s2.bn = 'update'
  s2.max_norm = 0.1
  s2.loss.name = 'class_balanced'
  s2.loss.cb_variant = 'softmax_bce'
  s2.loss.cb_beta = 0.9999
  s2.optim.lr = 0.01
  s2.optim.weight_decay = 0.1
  s2.schedule.name = 'cosine'
  s2.schedule.granularity = 'epoch'
  s2.schedule.epoch_offset = 1
