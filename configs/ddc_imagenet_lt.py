r"""DDC (Wang et al., NeurIPS 2023) on ImageNet-LT with SAM: VS + TLA + ADRW, or LDAM + DRW.

Paper: "A Unified Generalization Analysis of Re-Weighting and Logit-Adjustment
for Imbalanced Learning", Table 2, ImageNet-LT (Many / Med. / Few / All, as
printed):
  Ours     (VS+TLA+ADRW+SAM, method=vs_tla_adrw)  62.9  52.6  37.1  54.1
  SAM [29] (LDAM+DRW+SAM,    method=ldam_drw)     62.0  52.1  34.8  53.1
No ltjax number yet.

Where the values come from. DDC publishes no large-scale setting: the code
(wang22ti/DDC) ships CIFAR only and the paper defers its details to an
Appendix F, not available here. DDC's code is built on Saddle-LongTail, and
its "SAM" row is Saddle's own
LDAM+DRW+SAM ImageNet-LT number (53.1, as in the val-iisc/Saddle-LongTail
README), so the recipe is Saddle's ImageNet-LT command (run.sh,
imnet_train_sam.py; docs/references.md, 'Saddle-LongTail and SAM' and 'DDC:
losses and schedules'):
  * ResNet-50 from scratch (a linear head; LDAM's normalised cosine head for
    LDAM), batch 256, 90 epochs, SGD lr 0.2, momentum 0.9, weight decay 2e-4 on
    every parameter, CosineAnnealingLR(90) stepped after each epoch;
  * SAM on every parameter, rho 0.05 / 0.1 / 0.5 / 0.5 over the epochs
    1-5 / 6-60 / 61-75 / 76-90;
  * DRW (beta 0.9999) from the 0-indexed epoch 60 (Saddle's epoch // 60); DDC
    switches ADRW and TLA at its re-weighting epoch, so they switch at 60 too;
    LDAM max margin 0.3, s 30;
  * data: the OLTR lists, RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4,
    0.4), test Resize(256) + CenterCrop(224) (docs/references.md, 'Conventions:
    large-scale split files and augmentation'). Saddle keeps the best epoch on
    the test list; ltjax selects it on the validation list (20 per class) and
    reports the test list.
Not published, placeholders to tune: the VS gamma and tau and the ADRW nu of
"Ours" on ImageNet-LT. Here gamma 0.3 and tau 1.0 (the VS loss's defaults in
orparask/VS-Loss and in Saddle's code) and nu 0.25 (DDC's scripted CIFAR-100-LT
IR-100 value); override with --config.loss.vs_gamma, vs_tau, adrw_nu.
Not expressible yet: BN running statistics updated in both SAM passes (the
PyTorch SAM of Saddle/DDC); ltjax keeps those of the clean pass. Compute is
bfloat16 here (parameters float32); Saddle trains in float32
(--config.dtype=float32).

Device time (estimate from the measured H100 step time x steps; input pipeline
not included; benchmarks/README.md, 'Train step on the H100'): ResNet-50 224
px, bfloat16, batch 128 25.5 ms -> batch 256 ~51 ms, doubled by SAM ~102 ms;
115,846 // 256 = 452 steps x 90 epochs = 40,680 steps ~ 1.15 h (float32: 43.7 ms
per 128 -> ~2.0 h). Evaluation not included.

    python launch/train.py --config=configs/ddc_imagenet_lt.py:method=vs_tla_adrw \
      --config.data.data_dir=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
      --workdir=runs/ddc_imagenet_lt

Arguments: method (vs_tla_adrw: the paper's "Ours"; ldam_drw: its "SAM" row).
"""

from ltjax.configs import base
from ltjax.configs import common

METHODS = ('vs_tla_adrw', 'ldam_drw')


def get_config(arg=None):
  args = common.parse_arg(arg, method='vs_tla_adrw')
  if args.method not in METHODS:
    raise ValueError(f'Unknown method {args.method!r}; valid: {METHODS}.')
  config = base.get_config()
  common.large_scale_lt(config, dataset='imagenet_lt')
  common.large_scale_run(config)
  config.model.name = 'resnet50'
  config.batch_size = 256
  config.num_epochs = 90
  config.optim.lr = 0.2
  config.optim.weight_decay = 2e-4
  config.schedule.name = 'cosine'
  config.schedule.granularity = 'epoch'  # CosineAnnealingLR stepped after each epoch.
  config.schedule.epoch_offset = 0
  config.sam.rho_boundaries = (5, 60, 75)
  config.sam.rho_values = (0.05, 0.1, 0.5, 0.5)

  config.loss.switch_epoch = 60
  config.loss.drw_beta = 0.9999
  if args.method == 'ldam_drw':
    config.model.head = 'cosine'
    config.loss.name = 'ldam'
    config.loss.ldam_max_margin = 0.3
    config.loss.ldam_scale = 30.0
    config.loss.schedule = 'drw'
  else:
    config.loss.name = 'vs'
    config.loss.schedule = 'adrw_tla'
    config.loss.vs_gamma = 0.3  # Not published (see the docstring).
    config.loss.vs_tau = 1.0
    config.loss.adrw_nu = 0.25
  return config
