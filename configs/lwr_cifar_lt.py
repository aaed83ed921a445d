r"""Logit weight repulsion (LWR) + Balanced Softmax on CIFAR-100-LT with ResNet-32.

Paper (Ha, Park, Choi, "Novel Regularization via Logit Weight Repulsion for
Long-Tailed Classification"; no public code, docs/references.md, 'LWR: paper
only'). Reported top-1 on CIFAR-100-LT, row "Ours(R_LWR + BS [31])":
  Table 1: IF=100 / 50 / 10 = 50.7 / 54.3 / 63.6 (ir=100 / 50 / 10);
           IF=100 Few / Medium / Many = 32.2 / 50.0 / 66.6.
  Table 4 (IF=100, Few / Medium / Many / All):
    Balanced Softmax              25.0 / 46.7 / 63.9 / 46.3  lwr=false
    + R_LWR (lambda(t) = 1)       28.8 / 51.6 / 64.0 / 49.3  fixed_lambda=true,no_projection=true
    + R_LWR w/ proj               30.0 / 49.9 / 65.3 / 49.5  fixed_lambda=true
    + lambda(t) R_LWR w/ proj     32.2 / 50.0 / 66.6 / 50.7  (default)
    (lambda(t) decaying without the projection, no_projection=true alone, is
    not a row of the paper.)
  Table 5 (IF=100, All, theta=...): -1.0 50.1, 0 50.0, 0.2 50.2, 0.4 50.7,
    0.6 49.9, 1.0 46.3 (theta = 1 repels nothing: the Balanced Softmax row).
  Table 3 (other base losses + LWR) is on ImageNet-LT, not CIFAR (see
  configs/lwr_imagenet_lt.py); loss=ce_drw|focal|la trains those losses with
  LWR here too, for which the paper reports no CIFAR number (Table 1 lists
  Focal 41.9 and LA 46.5 without LWR).
  No ltjax number yet.

Recipe, from the paper's Sec. 3.3 and Sec. 4: ResNet-32, SGD momentum 0.9, lr
0.1, x0.1 at epochs 140 and 170, 200 epochs, weight decay 5e-4; L_bal +
lambda(t) R_LWR with lambda(t) = (1 - t/T)^2 (Eq. 7, so lambda0 = 1), theta 0.4,
temperature tau 0.1, repulsion on class vectors passed through a trainable MLP
with one hidden layer as wide as the class vector (model.head='lwr'; the
paper does not state the MLP's output width: lwr_projection_dim 0 keeps it d).
Not stated by the paper, so ltjax's choices: batch 128 and no warm-up (the
LDAM-DRW lineage of its baselines); the standard crop + flip (the paper cites
Equalization Loss's augmentation without restating it); seeded per-class
shuffle; DRW (ce_drw) switching at the first lr decay, epoch 140, with
effective-number beta 0.9999; focal gamma 2 and LA tau 1 (their papers'
defaults). Groups: many > 100, few < 20.

    python launch/train.py --config=configs/lwr_cifar_lt.py:ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/lwr_cifar100_lt_ir100

Arguments: ir (imbalance ratio), loss (bs, ce_drw, focal, la), lwr (bool),
fixed_lambda (bool: loss.lwr_schedule='constant'), no_projection (bool:
model.head='linear', the repulsion on W itself), theta.

Device time (estimate: measured ResNet-32 float32 step time at batch 128 on one
H100, 6.50 ms (benchmarks/README.md, 'Train step on the H100') x steps; input
pipeline not included): 16,800 steps at IR 100 (30,400 at IR 10), about 2
(3.5) min.
"""

from ltjax.configs import base
from ltjax.configs import common

# loss argument -> (loss.name, loss.schedule).
LOSSES = {
    'bs': ('balanced_softmax', 'none'),
    'ce_drw': ('cross_entropy', 'drw'),
    'focal': ('focal', 'none'),
    'la': ('logit_adjusted', 'none'),
}


def lwr_loss(config, args, *, drw_switch_epoch: int) -> None:
  """L_bal (+ lambda(t) R_LWR) from the parsed arguments; shared by lwr_imagenet_lt."""
  if args.loss not in LOSSES:
    raise ValueError(f'Unknown loss {args.loss!r}; valid: {sorted(LOSSES)}.')
  config.loss.name, config.loss.schedule = LOSSES[args.loss]
  if args.loss == 'ce_drw':
    config.loss.switch_epoch = drw_switch_epoch  # The first lr decay, as LDAM-DRW.
    config.loss.drw_beta = 0.9999
  config.loss.focal_gamma = 2.0
  config.loss.la_tau = 1.0
  if not args.lwr:
    config.model.head = 'linear'
    config.loss.lwr_weight = 0.0
    return
  config.model.head = 'linear' if args.no_projection else 'lwr'
  config.model.lwr_projection_dim = 0  # = d.
  config.loss.lwr_weight = 1.0
  config.loss.lwr_theta = args.theta
  config.loss.lwr_tau = 0.1
  config.loss.lwr_schedule = 'constant' if args.fixed_lambda else 'decay'


def get_config(arg=None):
  args = common.parse_arg(
      arg,
      ir=100.0,
      loss='bs',
      lwr=True,
      fixed_lambda=False,
      no_projection=False,
      theta=0.4,
  )
  config = base.get_config()
  common.cifar_lt(config, dataset='cifar100', imbalance_ratio=args.ir)
  config.model.name = 'resnet32'
  config.batch_size = 128
  config.num_epochs = 200
  config.eval_every_epochs = 10
  config.optim.lr = 0.1
  config.optim.weight_decay = 5e-4
  config.schedule.name = 'warmup_multistep'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 0
  config.schedule.warmup_epochs = 0
  config.schedule.milestones = (140, 170)
  config.schedule.gamma = 0.1
  lwr_loss(config, args, drw_switch_epoch=140)
  return config
