r"""Cross-entropy on Fashion-MNIST-LT: the baseline of the offline default.

The data, network and stage-1 optimisation of ``configs/default.py`` without
CC-SAM, mixup or the second stage: 30 epochs of SGD (lr 0.05, momentum 0.9,
wd 5e-4, cosine, batch 64, crop + flip) on plain cross-entropy.

    python launch/train.py --config=configs/ce_default.py --workdir=runs/ce_default
"""

from ltjax.configs import base


def get_config():
  config = base.get_config()
  config.data.name = 'fashion_mnist'
  config.data.imbalance_ratio = 100.0
  config.data.n_max = 1000
  config.data.augment = 'crop_flip'
  config.data.crop_padding = 2
  config.model.name = 'small_cnn'
  config.batch_size = 64
  config.num_epochs = 30
  config.eval_every_epochs = 5
  config.log_every_steps = 20
  config.optim.lr = 0.05
  config.optim.weight_decay = 5e-4
  config.schedule.name = 'cosine'
  return config
