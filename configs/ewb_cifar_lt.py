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
    class in the python-pickle file order (no shuffle); a single view at test
    time (the code's horizontal_flip_aug is never called); the validation
    split evaluated every epoch, the best checkpoint chosen on it;
  * weight decay lambda = 5e-3 as the loss term lambda / 2 sum ||theta||^2 (the
    gradient of coupled SGD decay) on every trained parameter, BN scales and
    shifts included, and with the ETF classifier its trained bias too (its W is
    fixed, no parameter): with the published first.json the code's
    weight_decay_target is never set, so set_weight_decay decays the whole
    trained list (utils/regularizers.py); "WD w/o BN" decays the convolution
    kernels only (the ETF is no nn.Linear, so its bias is not decayed);
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
    1.00; second.json uses 0.65 (CIFAR-100, on that grid) and 1.6 (CIFAR-10,
    outside it), so gamma is searched over ltjax's default 0, 0.05, ..., 2.
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
  wd_etf_dr    WD&ETF&DR (Table 6, CIFAR-100, N/A): Many / Medium / Few / Average
               72.9 / 43.0 / 20.0 / 46.0 (WD&ETF there: 76.3 / 46.0 / 15.5 / 46.9)
"cb" is Cui et al.'s class-balanced softmax CE as the code's CB_loss computes
it: the weighted per-sample losses' plain batch mean (loss.weighted_reduction
'batch'), beta 0.9999. "wd_etf_dr" trains the ETF classifier with the
dot-regression loss of the code (Yang et al., NeurIPS 2022): (z_y - |f| |w_y|)^2
/ (2 |f| |w_y|) with the norm product held constant, no FR; the code ships no
json for it, so the rest is first.json's.
Table 2 (FDR only; la=none, the evaluation report's 'fdr' and 'fdr_train'): Naive
& CE (naive), Naive & CB (cb), WD & CE (wd), WD & CB (wd_cb: CB with weight
decay), WD w/o BN (wd_nobn: linear head, decay on the convolutions and the
classifier, as the code's weight_decay_bn false), WD fixed BN (wd_fixedbn:
linear head, BN fixed at bn_scale). CIFAR-100-LT train / test FDR as printed:
128 / 41.6, 81.7 / 24.2, 28,700 / 107, 21,200 / 67.4, 577 / 79.5, 20,400 / 105.
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
    the final model;
  * CIFAR-10's normalisation std in the code is (0.2470, 0.2435, 0.2616);
    ltjax normalises CIFAR-10 with the LDAM lineage's (0.2023, 0.1994, 0.2010).

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

Arguments: variant (wd_fr_etf, wd_etf, wd, wd_nobn_etf, wd_fixedbn_etf,
wd_etf_dr, naive, cb, wd_cb, wd_nobn, wd_fixedbn), la (mult, add, none), dataset (cifar10, cifar100), ir (imbalance ratio;
the paper: 100), backbone (resnet34, resnext50), bn_scale (wd_fixedbn_etf).
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

VARIANTS = (
    'wd_fr_etf',
    'wd_etf',
    'wd',
    'wd_nobn_etf',
    'wd_fixedbn_etf',
    'wd_etf_dr',
    'naive',
    'cb',
    'wd_cb',
    'wd_nobn',
    'wd_fixedbn',
)
LOGIT_ADJUSTMENTS = ('mult', 'add', 'none')
ARGUMENTS = dict(
    variant=VARIANTS,
    la=LOGIT_ADJUSTMENTS,
    dataset=('cifar100', 'cifar10'),
    ir=(100.0,),
    backbone=('resnet34', 'resnext50'),
    bn_scale=(0.1,),
)
# EWB App. 7.5.3: tau of the additive LA searched in 1.00, 1.05, ..., 2.00.
ADDITIVE_GRID = tuple(round(1.0 + 0.05 * i, 2) for i in range(21))
# "WD w/o BN": weight decay on the convolution kernels only.
CONV_KERNELS = r'backbone/.*conv[^/]*/kernel'
# weight_decay_bn false with a linear head: the convolution kernels and the nn.Linear.
CONV_KERNELS_AND_HEAD = CONV_KERNELS + '|head/.*'
# "WD fixed BN": every parameter trains except the BN scales and shifts.
NOT_BN = r'(?!backbone/(.*/)?[a-z_]*bn[0-9]*/(scale|bias)$).*'
BACKBONES = {'resnet34': 'resnet34_cifar', 'resnext50': 'resnext50_32x4d_cifar'}
ETF_VARIANTS = ('wd_fr_etf', 'wd_etf', 'wd_nobn_etf', 'wd_fixedbn_etf', 'wd_etf_dr')
CODE = p.Repo('HN410/Exploring-Weight-Balancing-on-Long-Tailed-Recognition-Problem', 'f8131b5')
PAPER = p.Paper('EWB (Hasegawa & Sato, ICLR 2024)')
APP753 = PAPER('App. 7.5.3')
TRAINVAL = CODE('utils/trainval.py train_model')
FIRST = CODE('jsons/Cifar100/first.json')  # Cifar10/first.json differs only in the data set.
REGULARIZERS = CODE('utils/regularizers.py set_weight_decay')
ROWS = {
    'wd_fr_etf': PAPER('Sec. 5.2, Tables 4 and 8 (WD&FR&ETF)'),
    'wd_etf': PAPER('Tables 4 and 8 (WD&ETF)'),
    'wd': PAPER('Tables 4 and 8 (WD)'),
    'wd_nobn_etf': PAPER('Sec. 4.3, Tables 7 and 8 (WD w/o BN & ETF)'),
    'wd_fixedbn_etf': PAPER('Tables 7 and 8 (WD fixed BN & ETF)'),
    'wd_etf_dr': PAPER('Table 6 (WD&ETF&DR)'),
    'naive': PAPER('Tables 4 and 8 (Naive)'),
    'cb': PAPER('Tables 4 and 8 (CB)'),
    'wd_cb': PAPER('Table 2 (WD & CB)'),
    'wd_nobn': PAPER('Tables 2 and 3 (WD w/o BN)'),
    'wd_fixedbn': PAPER('Table 2 (WD fixed BN)'),
}


def settings(args) -> p.Settings:
  cifar10 = args.dataset == 'cifar10'
  etf = args.variant in ETF_VARIANTS
  row = ROWS[args.variant]
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset=args.dataset,
      imbalance_ratio=args.ir,
      ratio_source=PAPER('Tables 4, 7, 8 (imbalance ratio 100)'),
  )
  s.set('seed', 0, p.assumed('the paper averages 5 seeds; seed 0 is one of them'))
  s.set('dtype', 'float32', TRAINVAL)
  # The first n_c of each class in file order, then 20 per class for validation (App. 7.5.1).
  s.set('data.selection', 'first', CODE('utils/data_units.py gen_imbalanced_data'))
  s.set('data.val_per_class', 20, CODE('utils/datasets.py VALID_SAMPLE_N'))
  s.set('data.sampler', 'instance', CODE('utils/datasets.py'))
  s.set('data.mixup_alpha', 0.0, APP753)
  s.set('model.name', BACKBONES[args.backbone], CODE('utils/network_arch_resnet.py ResnetEncoder'))
  s.set('model.head', 'etf' if etf else 'linear', row)
  s.set('model.head_init', 'torch', CODE('utils/network_arch_resnet.py'))
  s.set('batch_size', 64, APP753)
  s.set('num_epochs', 320, APP753)
  s.set('eval_every_epochs', 1, TRAINVAL)  # The validation split every epoch.
  # Single view: horizontal_flip_aug is defined in utils/eval_funcs.py but never called.
  s.set('eval.flip_tta', False, CODE('utils/eval_funcs.py process_all_data'))
  s.set('eval.groups', 'threshold', CODE('utils/eval_funcs.py shot_acc'))
  if cifar10:
    s.set('eval.many_threshold', 1000, CODE('utils/datasets.py (CIFAR-10 thresholds)'))
    s.set('eval.few_threshold', 200, CODE('utils/datasets.py (CIFAR-10 thresholds)'))
  s.set('optim.lr', 0.01, APP753)
  s.set('optim.momentum', 0.9, APP753)
  s.set('optim.nesterov', False, TRAINVAL)
  s.set('schedule.name', 'cosine', APP753)  # From 0.01 to 0.
  s.set('schedule.granularity', 'epoch', TRAINVAL)
  s.set('schedule.epoch_offset', 1, TRAINVAL)  # schedulerW.step() before each training phase.
  s.set('sam.rho', 0.0, APP753)
  s.set('cc_sam.flat_ratio', 0.0, APP753)
  s.set('stage2.num_epochs', 0, PAPER('Sec. 5.2 (one stage, then post-hoc LA)'))

  # Weight decay lambda / 2 sum ||theta||^2 in the loss: with first.json every trained
  # parameter, BN and the ETF classifier's trained bias included (weight_decay_target is
  # never assigned, so set_weight_decay's first branch runs).
  s.set('optim.weight_decay', 5e-3, FIRST)
  s.set('optim.weight_decay_mask', '.*', REGULARIZERS)
  s.set('loss.name', 'cross_entropy', FIRST)
  s.set('loss.schedule', 'none', FIRST)
  if args.variant in ('wd_nobn_etf', 'wd_fixedbn_etf'):
    # weight_decay_bn false: every Conv2d weight and nn.Linear decays; the ETF classifier is
    # not an nn.Linear, so its bias does not.
    s.set('optim.weight_decay_mask', CONV_KERNELS, REGULARIZERS)
  if args.variant in ('wd_nobn', 'wd_fixedbn'):
    s.set('optim.weight_decay_mask', CONV_KERNELS_AND_HEAD, REGULARIZERS)
  if args.variant in ('wd_fixedbn_etf', 'wd_fixedbn'):
    # BN scales fixed at bn_scale, shifts at their init 0.
    s.set('model.bn_scale_init', args.bn_scale, PAPER('Sec. 4.3 (chosen on validation)'))
    s.set('trainable', NOT_BN, row)
  if args.variant == 'wd_fr_etf':
    # CIFAR-10: the paper's 0.02 (App. 7.6.4); the released Cifar10/first.json has 0.01.
    fr = PAPER('App. 7.6.4') if cifar10 else FIRST
    s.set('loss.feature_norm_weight', 0.02 if cifar10 else 0.01, fr)
  if args.variant == 'wd_etf_dr':
    s.set('loss.name', 'dot_regression', CODE('utils/class_balanced_loss.py DotRegressionLoss'))
  if args.variant in ('naive', 'cb'):
    s.set('optim.weight_decay', 0.0, row)
  if args.variant in ('cb', 'wd_cb'):
    cb = CODE('utils/class_balanced_loss.py CB_loss')
    s.set('loss.name', 'class_balanced', row)
    s.set('loss.cb_variant', 'softmax', CODE('utils/loss.py get_loss_function'))
    s.set('loss.cb_beta', 0.9999, CODE('utils/loss.py get_loss_function'))
    s.set('loss.weighted_reduction', 'batch', cb)  # The weighted losses' plain mean.

  if args.la == 'mult':
    # The ETF logits z_c pi_c^-gamma, bias included (utils/model_units.py LogitAdjuster); for
    # a linear head the paper's Eq. (9), class vectors normalised then scaled.
    method = 'multiplicative' if etf else 'normalized_multiplicative'
    s.set('posthoc.method', method, PAPER('Eq. (9)') if not etf else CODE('utils/model_units.py'))
    s.set(
        'posthoc.grid',
        (),
        p.assumed("gamma in 0, 0.05, ..., 2: second.json's 1.6 is off the paper's grid"),
    )
  elif args.la == 'add':
    s.set('posthoc.method', 'additive', PAPER('Eq. (10)'))
    s.set('posthoc.grid', ADDITIVE_GRID, APP753)
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
