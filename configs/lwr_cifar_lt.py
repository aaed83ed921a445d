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
shuffle; evaluated every epoch, single view; DRW (ce_drw) switching at the first lr decay, epoch 140, with
effective-number beta 0.9999; focal gamma 2 and LA tau 1 (their papers'
defaults). Groups: many > 100, few < 20.

    python launch/train.py --config=configs/lwr_cifar_lt.py:ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/lwr_cifar100_lt_ir100

Arguments: ir (imbalance ratio), loss (bs, ce_drw, focal, la), lwr (bool),
fixed_lambda (bool: loss.lwr_schedule='constant'), no_projection (bool:
model.head='linear', the repulsion on W itself), theta.

R_LWR as ltjax reads Eq. 5, whose numerator index is unbound: the numerator is
j = i, R = sum_i [logsumexp_j s_ij - s_ii] (why: ltjax.losses.regularizers.
lwr_regularizer and docs/references.md, 'LWR: paper only'). Every setting with
its source: python -m ltjax.configs configs/lwr_cifar_lt.py

Device time (estimate: measured ResNet-32 float32 step time at batch 128 on one
H100, 6.50 ms (benchmarks/README.md, 'Train step on the H100') x steps; input
pipeline not included): 16,800 steps at IR 100 (30,400 at IR 10), about 2
(3.5) min.
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = dict(
    ir=(100.0, 50.0, 10.0),
    loss=('bs', 'ce_drw', 'focal', 'la'),
    lwr=(True, False),
    fixed_lambda=(False, True),
    no_projection=(False, True),
    theta=(0.4, 0.2),
)
PAPER = p.Paper('LWR (Ha, Park, Choi)')
SEC4 = PAPER('Sec. 4 Implementation Details')
SEC33 = PAPER('Sec. 3.3')
# loss argument -> (loss.name, loss.schedule).
LOSSES = {
    'bs': ('balanced_softmax', 'none'),
    'ce_drw': ('cross_entropy', 'drw'),
    'focal': ('focal', 'none'),
    'la': ('logit_adjusted', 'none'),
}
UNSTATED = 'the paper does not state it'


def lwr_loss(s: p.Settings, args, *, drw_switch_epoch: int) -> p.Settings:
  """L_bal (+ lambda(t) R_LWR) from the parsed arguments; shared by lwr_imagenet_lt."""
  loss_source = SEC4 if args.loss == 'bs' else PAPER('Table 3 (the other base losses)')
  name, schedule = LOSSES[args.loss]
  s.set('loss.name', name, loss_source)
  s.set('loss.schedule', schedule, loss_source)
  if args.loss == 'ce_drw':
    first_decay = p.assumed(f'{UNSTATED}: the first lr decay, as LDAM-DRW switches')
    s.set('loss.switch_epoch', drw_switch_epoch, first_decay)
    s.set('loss.drw_beta', 0.9999, p.assumed(f"{UNSTATED}: LDAM-DRW's effective-number beta"))
  if args.loss == 'focal':
    s.set('loss.focal_gamma', 2.0, p.assumed(f"{UNSTATED}: the focal loss paper's default"))
  if args.loss == 'la':
    s.set('loss.la_tau', 1.0, p.assumed(f"{UNSTATED}: the logit-adjustment paper's default"))
  if not args.lwr:
    s.set('model.head', 'linear', PAPER('Table 4 row Balanced Softmax'))
    s.set('loss.lwr_weight', 0.0, PAPER('Table 4 row Balanced Softmax'))
    return s
  projection = PAPER('Table 4 (R_LWR without / with proj)') if args.no_projection else SEC33
  s.set('model.head', 'linear' if args.no_projection else 'lwr', projection)
  s.set('model.lwr_projection_dim', 0, p.assumed(f'{UNSTATED} (output width): d'))
  s.set('loss.lwr_weight', 1.0, PAPER('Eq. 7-8 (lambda(t) = (1 - t/T)^2: lambda0 = 1)'))
  s.set('loss.lwr_theta', args.theta, PAPER('Sec. 4 and Table 5 (theta)'))
  s.set('loss.lwr_tau', 0.1, SEC33)
  lambda_source = PAPER('Table 4 (fixed lambda(t) = 1)') if args.fixed_lambda else PAPER('Eq. 7')
  s.set('loss.lwr_schedule', 'constant' if args.fixed_lambda else 'decay', lambda_source)
  return s


def lwr_protocol(s: p.Settings, args) -> p.Settings:
  """What every LWR recipe shares: SGD momentum 0.9, no warm-up, one stage, no TTA."""
  s.set('seed', 0, p.assumed(f'{UNSTATED}'))
  s.set('data.sampler', 'instance', SEC4)
  s.set('data.mixup_alpha', 0.0, SEC4)
  s.set('model.head_init', 'torch', p.assumed(f"{UNSTATED}: PyTorch's nn.Linear default"))
  s.set('eval_every_epochs', 1, p.assumed(f'{UNSTATED}: every epoch, as the CIFAR-LT repos'))
  s.set('eval.flip_tta', False, p.assumed(f'{UNSTATED}: single view'))
  s.set('eval.groups', 'threshold', common.OLTR_GROUPS)
  s.set('optim.momentum', 0.9, SEC4)
  s.set('optim.nesterov', False, SEC4)
  s.set('optim.weight_decay_mask', '.*', p.assumed(f"{UNSTATED}: torch.optim.SGD's all"))
  s.set('schedule.name', 'warmup_multistep', SEC4)  # Step decays; no warm-up.
  s.set('schedule.granularity', 'epoch', SEC4)
  s.set('schedule.epoch_offset', 0, SEC4)  # "decays at the 140th and 170th epoch".
  s.set('schedule.warmup_epochs', 0, p.assumed(f'{UNSTATED}: none'))
  s.set('schedule.gamma', 0.1, SEC4)
  s.set('sam.rho', 0.0, SEC4)
  s.set('cc_sam.flat_ratio', 0.0, SEC4)
  s.set('stage2.num_epochs', 0, SEC4)
  return s


def settings(args) -> p.Settings:
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset='cifar100',
      imbalance_ratio=args.ir,
      ratio_source=PAPER('Table 1 columns (IF 100 / 50 / 10)'),
  )
  s.set('dtype', 'float32', SEC4)
  s.set('data.selection', 'shuffle', common.CIFAR_LT)  # Cao et al.'s seeded shuffle.
  s.set('data.subsample_seed', 0, common.CIFAR_LT)
  s.set('model.name', 'resnet32', SEC4)
  s.set('batch_size', 128, p.assumed(f"{UNSTATED}: the LDAM-DRW lineage's batch"))
  s.set('num_epochs', 200, SEC4)
  s.set('optim.lr', 0.1, SEC4)
  s.set('optim.weight_decay', 5e-4, SEC4)
  s.set('schedule.milestones', (140, 170), SEC4)
  lwr_protocol(s, args)
  return lwr_loss(s, args, drw_switch_epoch=140)


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
