r"""CC-SAM (Zhou et al., CVPR 2023) on CIFAR-10/100-LT with the official settings.

The released code's CIFAR configs (official code zzpustc/CC-SAM, train_cifar.py
with configs/Cifar10.json and configs/Cifar100.json; see docs/references.md,
'CC-SAM: CIFAR recipe', 'CC-SAM: stage 1' and 'CC-SAM: stage 2'): ResNet-32 as
coded there ([5, 5, 4] blocks), batch 64, 230 epochs in two stages.
  stage 1 (200 epochs)  SGD lr 0.1, momentum 0.9, wd 2e-4, linear warm-up from
                        lr/3 over 5 epochs, x0.1 at epochs 160 and 180, stepped
                        at each epoch start; mixup alpha 1; loss (1 - r) CE +
                        r flat loss, r = 0.3 (CIFAR-10) / 0.5 (CIFAR-100),
                        noise_ratio 1e-6, the official radius.
  stage 2 (30 epochs)   from the best stage-1 checkpoint, only the classifier
                        trains (BN in train mode), class-aware sampling, no
                        mixup, lr 0.01 constant, wd 2e-4; adversarial features
                        (lambda 1, w_c = log(n_max/n_c + 0.01)/2) mixed in with
                        alpha = min((epoch + 1)/30, cap), cap 1.0 (CIFAR-10) /
                        0.3 (CIFAR-100).
Data: each class's kept images drawn by numpy's per-class shuffle after
train_cifar.py seeds numpy with 42 (data.subsample_seed=42 reproduces the
official subset); evaluated every epoch, the best stage-1 checkpoint chosen on
test as the official code; many/few as CC-SAM's code (n >= 100, n <= 20).
The released JSONs use imbalance ratio 200 (cifar_imb_ratio 0.005).
Paper numbers (Table 1/3, CIFAR-100-LT): IR 200 / 100 / 50 = 45.66 / 50.83 /
53.91. No ltjax number yet.

    python launch/train.py --config=configs/cc_sam_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/cc_sam_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio). Every setting with
its source: python -m ltjax.configs configs/cc_sam_cifar_lt.py
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = dict(dataset=('cifar100', 'cifar10'), ir=(100.0, 200.0, 50.0))
CODE = p.Repo('zzpustc/CC-SAM', '651d3df')
PAPER = p.Paper('CC-SAM')
TRAIN = CODE('train_cifar.py')
CONSTANT = p.assumed('a constant rate: stepping changes nothing')


def settings(args) -> p.Settings:
  cifar100 = args.dataset == 'cifar100'
  json = CODE(f'configs/Cifar{100 if cifar100 else 10}.json')
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset=args.dataset,
      imbalance_ratio=args.ir,
      ratio_source=PAPER('Table 1 columns (the JSONs: cifar_imb_ratio 0.005, IR 200)'),
  )
  s.set('seed', 42, TRAIN)
  # train_cifar.py seeds numpy with 42 before IMBALANCECIFAR draws each class's kept images.
  s.set('data.selection', 'shuffle', CODE('datasets/Cifar.py gen_imbalanced_data'))
  s.set('data.subsample_seed', 42, TRAIN)
  s.set('data.sampler', 'instance', TRAIN)
  s.set('data.mixup_alpha', 1.0, json)
  s.set('dtype', 'float32', TRAIN)
  s.set('model.name', 'resnet32_ccsam', CODE('models/ResNet32Feature.py ([5, 5, 4] blocks)'))
  s.set('model.head', 'linear', CODE('models/DotProductClassifier.py'))
  # Kaiming init runs before the classifier is built: it keeps nn.Linear's default.
  s.set('model.head_init', 'torch', CODE('models/ResNet32Feature.py'))
  s.set('loss.name', 'cross_entropy', TRAIN)
  s.set('loss.schedule', 'none', TRAIN)
  s.set('batch_size', 64, json)
  s.set('num_epochs', 200, json)
  s.set('eval_every_epochs', 1, TRAIN)  # Evaluates (and keeps the best) every epoch.
  s.set('eval.flip_tta', False, TRAIN)
  s.set('eval.groups', 'threshold', CODE('utils/utils.py shot_acc'))
  s.set('eval.many_threshold', 99, CODE('utils/utils.py shot_acc (many: n >= 100)'))
  s.set('eval.few_threshold', 21, CODE('utils/utils.py shot_acc (few: n <= 20)'))
  s.set('optim.lr', 0.1, json)
  s.set('optim.momentum', 0.9, json)
  s.set('optim.nesterov', False, TRAIN)
  s.set('optim.weight_decay', 2e-4, json)
  s.set('optim.weight_decay_mask', '.*', TRAIN)  # torch.optim.SGD decays every parameter.
  s.set('schedule.name', 'warmup_multistep', CODE('utils/lr_scheduler.py WarmupMultiStepLR'))
  s.set('schedule.granularity', 'epoch', TRAIN)
  s.set('schedule.epoch_offset', 1, TRAIN)  # scheduler.step() at the start of each epoch.
  s.set('schedule.warmup_epochs', 5, json)
  s.set('schedule.warmup_start_factor', 1 / 3, CODE('utils/lr_scheduler.py WarmupMultiStepLR'))
  s.set('schedule.milestones', (160, 180), json)
  s.set('schedule.gamma', 0.1, json)
  s.set('sam.rho', 0.0, PAPER('Sec. 3 (class-conditional SAM replaces SAM)'))
  s.set('cc_sam.flat_ratio', 0.5 if cifar100 else 0.3, json)
  s.set('cc_sam.noise_ratio', 1e-6, json)
  s.set('cc_sam.radius', 'official', TRAIN)

  s.set('stage2.num_epochs', 30, json)  # max_epoch 230 - stage 200.
  s.set('stage2.init_from', 'best', TRAIN)  # The best-on-test stage-1 checkpoint.
  s.set('stage2.head', 'keep', TRAIN)
  s.set('stage2.trainable', 'head/.*', TRAIN)
  s.set('stage2.bn', 'update', TRAIN)  # The model stays in train mode.
  s.set('stage2.batch_size', 0, json)  # Stage 1's 64.
  s.set('stage2.sampler', 'class_aware', CODE('datasets/Samplers.py ClassAwareSampler'))
  s.set('stage2.augment', 'crop_flip', TRAIN)
  s.set('stage2.mixup_alpha', 0.0, TRAIN)
  s.set('stage2.eval_every_epochs', 1, TRAIN)
  s.set('stage2.max_norm', 0.0, TRAIN)
  s.set('stage2.loss.name', 'cross_entropy', TRAIN)
  s.set('stage2.loss.adversarial_weight', 1.0, TRAIN)  # adver_reg.
  s.set('stage2.loss.adversarial_div', 2.0, TRAIN)
  s.set('stage2.loss.adversarial_cap', 0.3 if cifar100 else 1.0, json)  # up_limit.
  s.set('stage2.optim.lr', 0.01, CODE('utils/lr_scheduler.py adjust_learning_rate (0.1 lr)'))
  s.set('stage2.optim.momentum', 0.9, TRAIN)
  s.set('stage2.optim.weight_decay', 2e-4, json)
  s.set('stage2.optim.weight_decay_mask', '.*', TRAIN)
  s.set('stage2.schedule.name', 'constant', CODE('utils/lr_scheduler.py adjust_learning_rate'))
  s.set('stage2.schedule.granularity', 'step', CONSTANT)
  s.set('stage2.schedule.epoch_offset', 0, CONSTANT)
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
