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

from ltjax.configs import common
from ltjax.configs import lwr_cifar_lt
from ltjax.configs import provenance as p

ARGUMENTS = {k: v for k, v in lwr_cifar_lt.ARGUMENTS.items() if k != 'ir'}
SEC4 = lwr_cifar_lt.SEC4


def settings(args) -> p.Settings:
  s = common.large_scale_lt(p.Settings(), dataset='imagenet_lt')
  common.large_scale_run(s)
  s.set('model.name', 'resnet50', SEC4)
  s.set('batch_size', 256, p.assumed('the paper does not state it: the usual batch for lr 0.1'))
  s.set('num_epochs', 100, SEC4)
  s.set('optim.lr', 0.1, SEC4)
  s.set('optim.weight_decay', 2e-4, SEC4)
  s.set('schedule.milestones', (60, 80), SEC4)
  lwr_cifar_lt.lwr_protocol(s, args)
  # An evaluation of the 20,000-image validation list every epoch costs minutes at this scale.
  s.set('eval_every_epochs', 5, p.assumed('the paper does not state it; cost at this scale'))
  return lwr_cifar_lt.lwr_loss(s, args, drw_switch_epoch=60)


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
