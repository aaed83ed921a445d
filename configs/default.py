r"""Fashion-MNIST-LT with cross-entropy: the offline default run.

Long-tailed Fashion-MNIST (exponential profile, n_max = 1000, imbalance ratio
100: counts 1000, 599, 359, 215, 129, 77, 46, 27, 16, 10, so many/medium/few
hold 5/3/2 classes), evaluated on the balanced 10k test set. The data come from
Debian's ``dataset-fashion-mnist`` package; no download.

    python launch/train.py --config=configs/default.py --workdir=runs/default

Small CNN, 30 epochs of SGD (lr 0.05, momentum 0.9, wd 5e-4, cosine), batch 64.
Takes a few minutes on 2 CPU cores; see README.md for the table it prints.
"""

from configs import base


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
