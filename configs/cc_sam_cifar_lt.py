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
Data: seeded per-class shuffle; many/few as CC-SAM's code (n >= 100, n <= 20).
The released JSONs use imbalance ratio 200 (cifar_imb_ratio 0.005).
Paper numbers (Table 1/3, CIFAR-100-LT): IR 200 / 100 / 50 = 45.66 / 50.83 /
53.91. No ltjax number yet.

    python launch/train.py --config=configs/cc_sam_cifar_lt.py:dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/cc_sam_cifar100_lt_ir100

Arguments: dataset (cifar10, cifar100), ir (imbalance ratio).
"""

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset='cifar100', ir=100.0)
  cifar100 = args.dataset == 'cifar100'
  config = base.get_config()
  common.cifar_lt(config, dataset=args.dataset, imbalance_ratio=args.ir)
  config.seed = 42
  config.data.mixup_alpha = 1.0
  config.model.name = 'resnet32_ccsam'
  config.eval.many_threshold, config.eval.few_threshold = 99, 21  # n >= 100, n <= 20.
  config.batch_size = 64
  config.num_epochs = 200
  config.eval_every_epochs = 5
  config.optim.lr = 0.1
  config.optim.weight_decay = 2e-4
  config.schedule.name = 'warmup_multistep'
  config.schedule.granularity = 'epoch'
  config.schedule.epoch_offset = 1
  config.schedule.warmup_epochs = 5
  config.schedule.warmup_start_factor = 1 / 3
  config.schedule.milestones = (160, 180)
  config.schedule.gamma = 0.1
  config.cc_sam.flat_ratio = 0.5 if cifar100 else 0.3
  config.cc_sam.noise_ratio = 1e-6
  config.cc_sam.radius = 'official'

  s2 = config.stage2
  s2.num_epochs = 30
  s2.init_from = 'best'
  s2.trainable = 'head/.*'
  s2.bn = 'update'
  s2.sampler = 'class_aware'
  s2.augment = 'crop_flip'
  s2.loss.adversarial_weight = 1.0
  s2.loss.adversarial_div = 2.0
  s2.loss.adversarial_cap = 0.3 if cifar100 else 1.0
  s2.optim.lr = 0.01
  s2.optim.weight_decay = 2e-4
  s2.schedule.name = 'constant'
  return config
