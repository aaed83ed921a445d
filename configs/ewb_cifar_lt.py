r"""EWB (Hasegawa & Sato, ICLR 2024) on CIFAR-10/100-LT: WD + FR + ETF, then post-hoc LA.

Paper: "Exploring Weight Balancing on Long-Tailed Recognition Problem", Sec.
5.2 (the one-stage method that replaces weight balancing's second stage) and
its analysis rows: Table 4 (CIFAR100-LT), Table 7 (restricted WD,
CIFAR100-LT), Table 8 (CIFAR10-LT), all imbalance ratio 100, mean of 5 seeds.
Recipe (official code HN410/Exploring-Weight-Balancing-on-Long-Tailed-
Recognition-Problem: jsons/Cifar{10,100}/first.json and second.json,
utils/regularizers.py, utils/model_units.py; paper App. 7.3 and 7.5;
docs/references.md, 'EWB: recipe and official code' and 'Weight balancing:
stage 1'):
  * weight balancing's "ResNet-34" (3x3 stem, no max-pool: resnet34_cifar),
    batch 64, SGD lr 0.01, momentum 0.9, cosine to 0 over 320 epochs stepped
    at each epoch start, plain CE, crop + flip, the first n_c images of each
    class in the python-pickle file order (no shuffle), flip averaging at test
    time;
  * weight decay lambda = 5e-3 as the loss term lambda / 2 sum ||theta||^2 (the
    gradient of coupled SGD decay) on every trained parameter, BN scales and
    shifts included, except the classifier when it is the ETF: its W is fixed
    (no parameter) and its trained bias is not decayed (weight_decay_mask
    'backbone/.*'); with a linear head everything decays, as weight balancing;
  * FR: + zeta mean_i ||f_i||^2 / 2, zeta 0.01 on CIFAR-100 (App. 7.5.3 and
    first.json) and 0.02 on CIFAR-10 (App. 7.6.4; the released
    Cifar10/first.json has 0.01);
  * the fixed simplex-ETF classifier (model.head='etf': equal norms, the
    official train_etf_norm=false) with a trained bias;
  * no second training stage: the final model's logits are adjusted post hoc,
    the value chosen on a validation split by balanced accuracy
    (config.posthoc). Validation: 20 images per class held out of the training
    data (App. 7.5.1, after Liu et al.), so n_max = 4980 / 480:
    data.val_per_class = 20. The best checkpoint is also chosen on it.
  * la=mult: z_c * pi_c^-gamma, the official multiplicative LA of the ETF logits
    (bias included; posthoc 'multiplicative'); for the linear-head variants
    the paper's Eq. (9), class vectors normalised then scaled by pi_c^-gamma
    ('normalized_multiplicative'). The paper searches gamma in 0.00, 0.05, ...,
    1.00; second.json uses 0.65 (CIFAR-100) and 1.6 (CIFAR-10), outside that
    grid, so gamma is searched over ltjax's default 0, 0.05, ..., 2.
    la=add: z_c - tau log pi_c (Eq. 10), tau in 1.00, 1.05, ..., 2.00 (paper).
    la=none: no adjustment (the "N/A" rows; every run also reports those).
  * many / few: n_c > 100 / n_c < 20 (CIFAR-100), > 1000 / < 200 (CIFAR-10).

Variants and the paper's averages (N/A / Add / Mult, as printed):
  variant      row                 CIFAR-100 (Tables 4, 7)  CIFAR-10 (Table 8)
  wd_fr_etf    WD&FR&ETF           47.6 / 50.9 / 53.0       76.2 / 80.2 / 80.1
  wd_etf       WD&ETF              46.9 / 50.2 / 51.7       75.8 / 79.8 / 80.4
  wd           WD (linear head)    46.0 / 49.6 / 50.8       77.1 / 80.4 / 80.8
  wd_nobn_etf  WD w/o BN & ETF     45.1 / 50.3 / 50.6       75.7 / 80.3 / 80.7
  naive        Naive (no WD)       38.5 / -    / -          69.4 / -    / -
  cb           CB (no WD)          26.1 / -    / -          63.5 / -    / -
"WD w/o BN" is weight decay on the convolution kernels only (Sec. 4.3), the
BN parameters still trained: weight_decay_mask over the conv kernels. The
default row (wd_fr_etf, la=mult, CIFAR-100) is printed as Many 74.2 +- 0.3,
Medium 52.9 +- 0.9, Few 29.9 +- 0.8, Average 53.0 +- 0.3. The WB row (50.6 /
78.8) is configs/wb_cifar_lt.py (with --config.data.val_per_class=20 for this
split). No ltjax number yet.

"WD fixed BN & ETF" (variant=wd_fixedbn_etf; Tables 7, 8: 46.5 / 48.4 / 48.9
and 75.7 / 78.4 / 80.5): every BN scale starts at bn_scale (model.bn_scale_init)
and, with the BN shifts (at their init 0), never trains (config.trainable
excludes them); weight decay on the convolutions only. The paper picks the
scale in 0.01, 0.02, ..., 0.20 on the validation split: run the grid
(bn_scale=0.01 ... 0.2) and keep the run with the best validation balanced
accuracy; the default 0.1 is one grid point, not the paper's choice (not stated).
backbone=resnext50: EWB Table 10 (ResNeXt-50 on CIFAR-100-LT, "as with
Alshammari et al.", the same parameters as the ResNet): N/A / Add / Mult =
48.0 / 52.2 / 52.8 (WD), 48.9 / 52.0 / 53.8 (WD&ETF), 49.4 / 52.2 / 54.0
(WD&FR&ETF); Naive 34.8, CB 23.9. Its CIFAR stem (3x3 stride-1 conv, no
max-pool, global pooling) is the official code's (utils/network_arch_resnet.py,
ResnetEncoder with torchvision's resnext50_32x4d): resnext50_32x4d_cifar.

Not expressible yet:
  * EWB's counts round n_max rho^(-c/(C-1)) where ltjax floors it (a class can
    have one image fewer, e.g. the CIFAR-100 tail 4 instead of 5);
  * EWB's validation images are the 20 that follow the first n_c of each
    class; ltjax holds out the last 20 of each class in file order;
  * the official code adjusts the best-on-validation checkpoint; ltjax adjusts
    the final model.

Device time (estimate from the measured H100 step time x steps; input pipeline
not included; benchmarks/README.md, 'Train step on the H100'). This ResNet-34
at 32 px, batch 64, float32 is not measured: ResNet-50's 43.7 ms per 128 images
at 8.2 GFLOP scaled by FLOPs (2.3 GFLOP per image) gives 6.2 ms, at the floor of
the launch-bound CIFAR steps measured (ResNet-32: 6.5 ms), so ~6.5 ms.
CIFAR-100-LT IR 100 (10,410 images): 162 steps x 320 epochs = 51,840 steps
~ 0.09 h; CIFAR-10-LT IR 100 (12,355): 193 x 320 ~ 0.11 h. Evaluation and the
post-hoc search not included.

DATA_DIR holds CIFAR's python-pickle folder (cifar-100-python / cifar-10-batches-py);
add --config.data.name=tfds to read a prepared TFDS set instead (README, "Data"):

    python launch/train.py \
      --config=configs/ewb_cifar_lt.py:variant=wd_fr_etf,la=mult,dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/ewb_wd_fr_etf_cifar100_lt_ir100

Arguments: variant (wd_fr_etf, wd_etf, wd, wd_nobn_etf, wd_fixedbn_etf, naive,
cb), la (mult, add, none), dataset (cifar10, cifar100), ir (imbalance ratio;
the paper: 100), backbone (resnet34, resnext50), bn_scale (wd_fixedbn_etf).
"""

from ltjax.configs import base
from ltjax.configs import common

VARIANTS = ('wd_fr_etf', 'wd_etf', 'wd', 'wd_nobn_etf', 'wd_fixedbn_etf', 'naive', 'cb')
LOGIT_ADJUSTMENTS = ('mult', 'add', 'none')
# EWB App. 7.5.3: tau of the additive LA searched in 1.00, 1.05, ..., 2.00.
ADDITIVE_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))
# "WD w/o BN": weight decay on the convolution kernels only.
CONV_KERNELS = r'backbone/.*conv[^/]*/kernel'
# "WD fixed BN": every parameter trains except the BN scales and shifts.
NOT_BN = r'(?!backbone/(.*/)?[a-z_]*bn[0-9]*/(scale|bias)$).*'
BACKBONES = {'resnet34': 'resnet34_cifar', 'resnext50': 'resnext50_32x4d_cifar'}


def get_config(arg=None):
  args = common.parse_arg(
      arg,
      variant='wd_fr_etf',
      la='mult',
      dataset='cifar100',
      ir=100.0,
      backbone='resnet34',
      bn_scale=0.1,
  )
  if args.backbone not in BACKBONES:
    raise ValueError(f'Unknown backbone {args.backbone!r}; valid: {sorted(BACKBONES)}.')
  if args.variant not in VARIANTS:
    raise ValueError(f'Unknown variant {args.variant!r}; valid: {VARIANTS}.')
  if args.la not in LOGIT_ADJUSTMENTS:
    raise ValueError(f'Unknown la {args.la!r}; valid: {LOGIT_ADJUSTMENTS}.')
  cifar10 = args.dataset == 'cifar10'
  etf = args.variant in ('wd_fr_etf', 'wd_etf', 'wd_nobn_etf', 'wd_fixedbn_etf')
  config = base.get_config()
  common.cifar_lt(config, dataset=args.dataset, imbalance_ratio=args.ir)
  config.data.selection = 'first'
  config.data.val_per_class = 20
  config.model.name = BACKBONES[args.backbone]
  config.eval.flip_tta = True
  if cifar10:
    config.eval.many_threshold, config.eval.few_threshold = 1000, 200
  config.batch_size = 64
  config.num_epochs = 320
  config.eval_every_epochs = 5
  config.optim.lr = 0.01
  config.optim.weight_decay = 5e-3
  config.schedule.name = 'cosine'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 1

  if etf:
    config.model.head = 'etf'
    config.optim.weight_decay_mask = 'backbone/.*'  # No decay of the ETF classifier.
  if args.variant in ('wd_nobn_etf', 'wd_fixedbn_etf'):
    config.optim.weight_decay_mask = CONV_KERNELS
  if args.variant == 'wd_fixedbn_etf':  # BN scales fixed at bn_scale, shifts at their init 0.
    config.model.bn_scale_init = args.bn_scale
    config.trainable = NOT_BN
  if args.variant == 'wd_fr_etf':
    config.loss.feature_norm_weight = 0.02 if cifar10 else 0.01
  if args.variant in ('naive', 'cb'):
    config.optim.weight_decay = 0.0
  if args.variant == 'cb':
    config.loss.name = 'class_balanced'
    config.loss.cb_variant = 'softmax'
    config.loss.cb_beta = 0.9999

  if args.la == 'mult':
    config.posthoc.method = 'multiplicative' if etf else 'normalized_multiplicative'
  elif args.la == 'add':
    config.posthoc.method = 'additive'
    config.posthoc.grid = ADDITIVE_GRID
  return config
