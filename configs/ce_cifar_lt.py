r"""Cross-entropy on CIFAR-10/100-LT: the baseline row of every CIFAR table.

The LDAM-DRW training recipe (Cao et al., NeurIPS 2019; official code
kaidic/LDAM-DRW, see docs/references.md, 'LDAM-DRW'), which
DDC, VS-Loss and Saddle reuse: ResNet-32 ([5,5,5], option-A shortcuts), batch
128, SGD lr 0.1, momentum 0.9, wd 2e-4, 200 epochs, linear warm-up lr*e/5 over
the first 5 epochs, lr x0.01 from epoch 160 and x1e-4 from epoch 180, its
Linear classifier re-initialised Kaiming-normal (models/resnet_cifar.py
_weights_init: model.head_init='kaiming_normal'), evaluated every epoch.
Reference numbers (DDC's 200-epoch reproduction, wang22ti/DDC README):
CIFAR-100-LT IR 100: 38.06, IR 10: 56.73.

DATA_DIR holds CIFAR's python-pickle folder (cifar-100-python / cifar-10-batches-py, as
torchvision downloads it); add --config.data.name=tfds to read a prepared TFDS set instead
(README, "Data"):

    python launch/train.py \
      --config=configs/ce_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/ce_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio), profile (exp, step).
Every setting with its source: python -m ltjax.configs configs/ce_cifar_lt.py
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = dict(dataset=('cifar100', 'cifar10'), ir=(100.0, 50.0, 10.0), profile=('exp', 'step'))
TRAIN = common.LDAM_DRW('cifar_train.py')
MODEL = common.LDAM_DRW('models/resnet_cifar.py')


def ldam_drw_protocol(s: p.Settings) -> p.Settings:
  """LDAM-DRW's ResNet-32 CIFAR training (kaidic/LDAM-DRW cifar_train.py), CE, no re-weighting.

  The protocol DDC, VS-Loss and Saddle reuse; their recipes change what differs.
  """
  s.set('seed', 0, p.assumed('cifar_train.py does not seed training by default (--seed None)'))
  s.set('dtype', 'float32', TRAIN)
  s.set('data.selection', 'shuffle', common.LDAM_DRW('imbalance_cifar.py (rand_number 0)'))
  s.set('data.subsample_seed', 0, common.LDAM_DRW('imbalance_cifar.py (rand_number 0)'))
  s.set('data.sampler', 'instance', TRAIN)
  s.set('data.mixup_alpha', 0.0, TRAIN)
  s.set('model.name', 'resnet32', MODEL)
  s.set('model.head', 'linear', MODEL)
  s.set('model.head_init', 'kaiming_normal', MODEL)  # _weights_init re-initialises the Linear.
  s.set('loss.name', 'cross_entropy', TRAIN)
  s.set('loss.schedule', 'none', TRAIN)
  s.set('batch_size', 128, TRAIN)
  s.set('num_epochs', 200, TRAIN)
  s.set('eval_every_epochs', 1, TRAIN)  # Validates and keeps the best every epoch.
  s.set('eval.flip_tta', False, TRAIN)
  s.set('eval.groups', 'threshold', common.OLTR_GROUPS)
  s.set('optim.lr', 0.1, TRAIN)
  s.set('optim.momentum', 0.9, TRAIN)
  s.set('optim.nesterov', False, TRAIN)
  s.set('optim.weight_decay', 2e-4, TRAIN)
  s.set('optim.weight_decay_mask', '.*', TRAIN)
  s.set('schedule.name', 'warmup_multistep', TRAIN)  # adjust_learning_rate.
  s.set('schedule.granularity', 'epoch', TRAIN)
  s.set('schedule.epoch_offset', 1, TRAIN)  # The lr is computed from e = epoch + 1.
  s.set('schedule.warmup_epochs', 5, TRAIN)
  s.set('schedule.warmup_start_factor', 0.0, TRAIN)
  s.set('schedule.milestones', (161, 181), TRAIN)  # x0.01 when e > 160, x1e-4 when e > 180.
  s.set('schedule.gamma', 0.01, TRAIN)
  s.set('sam.rho', 0.0, TRAIN)
  s.set('cc_sam.flat_ratio', 0.0, TRAIN)
  s.set('stage2.num_epochs', 0, TRAIN)
  return s


def settings(args) -> p.Settings:
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset=args.dataset,
      imbalance_ratio=args.ir,
      profile=args.profile,
      ratio_source=p.paper('the CIFAR-LT columns of the tables that list CE (DDC Table 1)'),
  )
  return ldam_drw_protocol(s)


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
