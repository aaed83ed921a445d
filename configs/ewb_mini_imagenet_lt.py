r"""EWB (Hasegawa & Sato, ICLR 2024) on mini-ImageNet-LT: Table 9's rows.

The variants of configs/ewb_cifar_lt.py (the one-stage WD + FR + ETF method
with post-hoc LA chosen on validation, and the analysis rows) on
mini-ImageNet-LT (data.name='mini_imagenet_lt': 100 ImageNet classes, the
train list long-tailed to imbalance ratio 100, 10,847 images; 100 validation
and 100 test images per class; README, "Data"). What differs from CIFAR (paper
App. 7.3-7.6; official code HN410/Exploring-Weight-Balancing-on-Long-Tailed-
Recognition-Problem, utils/models.py and utils/network_arch_resnet.py):
  * the backbone is torchvision's ResNet-34 at 224 px: for mini-ImageNet the
    official ResnetEncoder keeps the 7x7 stride-2 stem and the max-pool and
    pools globally (model.name='resnet34');
  * weight decay 0.003 in the first (only) stage (App. 7.5.1) and FR weight
    0.001 (App. 7.6);
  * RandomResizedCrop(224) + flip for training, Resize(256) + CenterCrop(224)
    at test, ImageNet mean/std (the official transforms; augment 'inat', i.e.
    no ColorJitter);
  * the validation split is the list's own (0.01_val.txt), so no training
    images are held out; many/medium/few as CIFAR-100-LT (> 100, 20-100, < 20).
Everything else (batch 64, SGD lr 0.01, cosine over 320 epochs, the ETF
classifier, the post-hoc grids, a single view at test time, the validation
split evaluated every epoch) is the CIFAR recipe's, as the paper states its
defaults once for all data sets.

Paper, Table 9 (Average, as printed; N/A / Add / Mult):
  variant      row               mini-ImageNet-LT
  wd_fr_etf    WD&FR&ETF         49.9 / 53.6 / 54.2
  wd_etf       WD&ETF            50.1 / 54.1 / 54.3
  wd           WD                49.8 / 54.7 / 54.6
  wd_nobn_etf  WD w/o BN & ETF   48.6 / 52.9 / 52.9
  naive        Naive             42.7
  cb           CB                34.3
  (WB, two stages: 54.8.) The "WD fixed BN" rows of Table 9 are
variant=wd_fixedbn_etf with the BN scale chosen on validation (bn_scale=...).
The lists of the paper were never published: ltjax writes them by the
official construction, seeded (ltjax.data.listfile.write_mini_imagenet_lt_lists),
so the subsets differ from the paper's. No ltjax number yet.

    python launch/train.py \
      --config=configs/ewb_mini_imagenet_lt.py:variant=wd_fr_etf,la=mult \
      --config.data.data_dir=/data/imagenet/train --config.data.list_dir=/data/mini_imagenet_lt \
      --workdir=runs/ewb_wd_fr_etf_mini_imagenet_lt

Arguments: variant, la, bn_scale (as configs/ewb_cifar_lt.py). Every setting
with its source: python -m ltjax.configs configs/ewb_mini_imagenet_lt.py

Device time (estimate from the measured H100 step time x steps; input pipeline
not included; benchmarks/README.md, 'Train step on the H100'): ResNet-34 at
224 px (3.6 GFLOPs, scaled from ResNet-50's 43.7 ms per 128 images in float32
at 4.1 GFLOPs: ~19 ms per 64 images); 169 steps x 320 epochs = 54,080 steps
~ 0.3 h.
"""

from ltjax.configs import common
from ltjax.configs import ewb_cifar_lt
from ltjax.configs import provenance as p

ARGUMENTS = dict(variant=ewb_cifar_lt.VARIANTS, la=ewb_cifar_lt.LOGIT_ADJUSTMENTS, bn_scale=(0.1,))
PAPER = ewb_cifar_lt.PAPER
CODE = ewb_cifar_lt.CODE


def settings(args) -> p.Settings:
  s = ewb_cifar_lt.settings(
      common.parse_arg(
          f'variant={args.variant},la={args.la},bn_scale={args.bn_scale},dataset=cifar100',
          **ewb_cifar_lt.ARGUMENTS,
      )
  )
  s.remove('data.profile', 'data.n_max', 'data.crop_padding', 'data.tfds_name')  # CIFAR's.
  common.large_scale_lt(s, dataset='mini_imagenet_lt')
  transforms = CODE('utils/data_units.py (mini-ImageNet transforms)')
  s.set('data.augment', 'inat', transforms)  # RandomResizedCrop + flip, no ColorJitter.
  s.set('data.selection', 'shuffle', common.LARGE_SCALE)  # Unused: the lists are long-tailed.
  s.set('data.val_per_class', 0, PAPER("App. 7.3 (the list's own validation split)"))
  s.set('model.name', 'resnet34', CODE('utils/network_arch_resnet.py ResnetEncoder (ImageNet)'))
  if s['optim.weight_decay'].value:
    s.set('optim.weight_decay', 3e-3, PAPER('App. 7.5.1'))
  if 'loss.feature_norm_weight' in s:
    s.set('loss.feature_norm_weight', 0.001, PAPER('App. 7.6'))
  s.set('eval.many_threshold', 100, common.OLTR_GROUPS)
  s.set('eval.few_threshold', 20, common.OLTR_GROUPS)
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
