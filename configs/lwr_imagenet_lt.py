r"""Logit weight repulsion (LWR) + Balanced Softmax on ImageNet-LT (ResNet-50); Table 3's losses.

Paper (Ha, Park, Choi, "Novel Regularization via Logit Weight Repulsion for
Long-Tailed Classification"; no public code, docs/references.md, 'LWR: paper
only'). Reported top-1 on ImageNet-LT (All / Few / Medium / Many):
  Table 2, row "Ours(R_LWR + BS [31])" (ResNet-50): 51.5 / 30.7 / 49.2 / 62.6
  (the default).
  Table 3, each base loss without and with R_LWR:
    loss=ce_drw  CE-DRW 47.6 / 28.0 / 44.9 / 57.6;  + R_LWR 50.4 / 30.0 / 47.7 / 60.4
    loss=bs      BS     48.7 / 24.0 / 46.2 / 60.5;  + R_LWR 51.5 / 30.7 / 49.2 / 62.6
    loss=focal   Focal  38.0 / 11.2 / 31.0 / 56.3;  + R_LWR 41.0 / 13.7 / 34.1 / 58.6
    loss=la      LA     48.0 / 29.1 / 44.4 / 58.5;  + R_LWR 50.1 / 31.5 / 46.9 / 60.4
  The rows without R_LWR (lwr=false) are baselines the paper compares to,
  trained for 90 or 100 epochs (Table 2 caption), not necessarily with this
  recipe. No ltjax number yet.

Recipe, from the paper's Sec. 3.3 and Sec. 4: ResNet-50, SGD momentum 0.9, lr
0.1, x0.1 at epochs 60 and 80, 100 epochs, weight decay 2e-4; the LWR terms as
configs/lwr_cifar_lt.py (helper ``lwr_loss``): lambda(t) = (1 - t/T)^2, theta
0.4, tau 0.1, the projection MLP (output width unstated: d).
Not stated by the paper, so ltjax's choices: batch 256 (the usual batch for lr
0.1 on ImageNet), no warm-up; the OLTR/Decoupling lists with RandomResizedCrop
+ flip + ColorJitter (docs/references.md, 'Conventions: large-scale split
files and augmentation'; the paper cites Equalization Loss's augmentation
without restating it); DRW (ce_drw) switching at the first lr decay, epoch 60,
effective-number beta 0.9999; focal gamma 2, LA tau 1. The validation list
selects the best checkpoint.

    python launch/train.py --config=configs/lwr_imagenet_lt.py:loss=bs \
      --config.data.data_dir=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
      --workdir=runs/lwr_imagenet_lt_bs

Arguments: loss (bs, ce_drw, focal, la), lwr (bool), fixed_lambda (bool),
no_projection (bool), theta; as configs/lwr_cifar_lt.py.

Device time (estimate: measured ResNet-50 bf16 step time on one H100 x steps;
input pipeline not included): 25.5 ms per 128 images (benchmarks/README.md,
'Train step on the H100'), 45,200 steps of 256: about 0.65 h.
"""

from ltjax.configs import base
from ltjax.configs import common
from ltjax.configs import lwr_cifar_lt


def get_config(arg=None):
  args = common.parse_arg(
      arg,
      loss='bs',
      lwr=True,
      fixed_lambda=False,
      no_projection=False,
      theta=0.4,
  )
  config = base.get_config()
  common.large_scale_lt(config, dataset='imagenet_lt')
  common.large_scale_run(config)
  config.model.name = 'resnet50'
  config.batch_size = 256
  config.num_epochs = 100
  config.optim.lr = 0.1
  config.optim.weight_decay = 2e-4
  config.schedule.name = 'warmup_multistep'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 0
  config.schedule.warmup_epochs = 0
  config.schedule.milestones = (60, 80)
  config.schedule.gamma = 0.1
  lwr_cifar_lt.lwr_loss(config, args, drw_switch_epoch=60)
  return config
