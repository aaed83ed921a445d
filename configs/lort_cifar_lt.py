r"""Logits retargeting (LORT; public code "LOS") on CIFAR-100-LT: CE + WD, then retargeted re-training.

Stage 1 (official code bilibili/LOS, main_stage1.py and utils/config.py;
docs/references.md, 'LORT: paper and LOS code'): the weight-balancing stage-1
recipe for 200 epochs -- "ResNet-34" with a 3x3 stem, CE, batch 64, SGD lr 0.01,
momentum 0.9, weight decay 5e-3, cosine stepped after each epoch (epoch e trains
at the value for e: LOS calls scheduler.step() after training, unlike weight
balancing's demo); first-n_c subsampling; evaluated every epoch with flip
test-time averaging, the best epoch kept.
Stage 2 (main_stage2.py): from the best stage-1 model, only the classifier
(W, b) trains, BN statistics keep updating (train mode, as the official code),
instance-balanced sampling at batch 64, the retargeted loss with delta = 0.98
(the LOS code's label_smoothing, target 1 - delta + delta/K on the true class),
SGD lr 5e-4, momentum 0.9, no weight decay, cosine over 20 epochs stepped after
each epoch, evaluated every epoch. No ltjax number yet; the paper (Lu et al., arXiv:2403.00250, Table 2)
reports 54.9 / 58.8 / 69.7 on CIFAR-100-LT IR 100 / 50 / 10.

    python launch/train.py --config=configs/lort_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/lort_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio), delta. Every
setting with its source: python -m ltjax.configs configs/lort_cifar_lt.py
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = dict(dataset=('cifar100', 'cifar10'), ir=(100.0, 50.0, 10.0), delta=(0.98, 0.99))
CODE = p.Repo('bilibili/LOS', '50652c0')
PAPER = p.Paper('LORT (Lu et al., arXiv:2403.00250)')
CONFIG = CODE('utils/config.py')
STAGE1 = CODE('main_stage1.py train_stage1')
STAGE2 = CODE('main_stage2.py train_stage2')
VALID = CODE('train/validate.py valid_base')


def settings(args) -> p.Settings:
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset=args.dataset,
      imbalance_ratio=args.ir,
      ratio_source=PAPER('Table 2 columns (CIFAR100-LT IR 100 / 50 / 10)'),
  )
  s.set('seed', 0, p.assumed('LOS does not seed by default (--seed None)'))
  s.set('dtype', 'float32', STAGE1)
  # The per-class shuffle is commented out: the first n_c in file order.
  s.set('data.selection', 'first', CODE('datasets/Cifar100LT.py'))
  s.set('data.sampler', 'instance', CODE('main_stage1.py main'))
  s.set('data.mixup_alpha', 0.0, STAGE1)
  s.set('model.name', 'resnet34_cifar', CODE('models/resnet.py'))
  s.set('model.head', 'linear', CODE('models/resnet.py'))
  s.set('model.head_init', 'torch', CODE('models/resnet.py'))
  s.set('loss.name', 'cross_entropy', STAGE1)  # label_smooth 0 in stage 1.
  s.set('loss.schedule', 'none', STAGE1)
  s.set('batch_size', 64, CONFIG)
  s.set('num_epochs', 200, CONFIG)
  s.set('eval_every_epochs', 1, STAGE1)  # Tests every epoch, keeps the best on test.
  s.set('eval.flip_tta', True, VALID)  # test_aug=True: logits of x and its flip averaged.
  s.set('eval.groups', 'threshold', CODE('train/validate.py'))
  s.set('optim.lr', 0.01, CONFIG)
  s.set('optim.momentum', 0.9, CONFIG)
  s.set('optim.nesterov', False, CONFIG)  # --nesterov is off unless given.
  s.set('optim.weight_decay', 5e-3, CONFIG)
  s.set('optim.weight_decay_mask', '.*', STAGE1)  # model.parameters().
  s.set('schedule.name', 'cosine', STAGE1)  # CosineAnnealingLR(epochs, eta_min=0).
  s.set('schedule.granularity', 'epoch', STAGE1)
  s.set('schedule.epoch_offset', 0, STAGE1)  # scheduler.step() after each training epoch.
  s.set('sam.rho', 0.0, STAGE1)
  s.set('cc_sam.flat_ratio', 0.0, STAGE1)
  return los_stage2(s, delta=args.delta, delta_source=CODE('readme.md (--label_smooth 0.98)'))


def los_stage2(s: p.Settings, *, delta: float, delta_source: p.Source) -> p.Settings:
  """LOS's classifier re-training (main_stage2.py): the stage 2 of every LORT recipe.

  Only the classifier (W, b) trains, BN statistics keep updating (train mode),
  shuffled instance sampling at batch 64, the retargeted target (PyTorch's
  label smoothing with delta), SGD lr 5e-4, momentum 0.9, no weight decay,
  cosine over 20 epochs stepped after each epoch, from the best stage-1 model,
  evaluated (and the best kept) every epoch.
  """
  s.set('stage2.num_epochs', 20, CONFIG)  # finetune_epoch.
  s.set('stage2.init_from', 'best', CODE('main_stage2.py load_model (best_model_stage1)'))
  s.set('stage2.head', 'keep', CODE('main_stage2.py load_model'))
  s.set('stage2.trainable', 'head/.*', STAGE2)  # optim.SGD(model.fc.parameters()).
  s.set('stage2.bn', 'update', CODE('train/train.py train_base (model.train())'))
  s.set('stage2.batch_size', 64, CONFIG)  # The same --batch_size as stage 1.
  s.set('stage2.sampler', 'instance', CODE('main_stage2.py main'))
  s.set('stage2.augment', '', CODE("main_stage2.py main (stage 1's transforms)"))
  s.set('stage2.mixup_alpha', 0.0, STAGE2)
  s.set('stage2.eval_every_epochs', 1, STAGE2)
  s.set('stage2.max_norm', 0.0, STAGE2)
  s.set('stage2.loss.name', 'lort', STAGE2)  # CrossEntropyLoss(label_smoothing=delta).
  s.set('stage2.loss.lort_delta', delta, delta_source)
  s.set('stage2.optim.lr', 5e-4, CONFIG)  # finetune_lr.
  s.set('stage2.optim.momentum', 0.9, STAGE2)
  s.set('stage2.optim.weight_decay', 0.0, CONFIG)  # finetune_wd.
  s.set('stage2.optim.weight_decay_mask', '.*', STAGE2)
  s.set('stage2.schedule.name', 'cosine', STAGE2)
  s.set('stage2.schedule.granularity', 'epoch', STAGE2)
  s.set('stage2.schedule.epoch_offset', 0, STAGE2)  # scheduler.step() after each epoch.
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
