r"""A tiny run of the default recipe, for tests and a first check of an install.

    python launch/train.py --config=configs/smoke.py --workdir=runs/smoke

The two-stage CC-SAM default (configs/default.py) on Fashion-MNIST-LT with 8
steps of batch 32 in stage 1 and one epoch of classifier re-training, each
evaluated on the full balanced test set. Finishes in about a minute on 2 CPU
cores.
"""

from ltjax.configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'small_cnn'
  config.batch_size = 32
  config.num_epochs = 1
  config.num_train_steps = 8
  config.log_every_steps = 4
  config.eval_batch_size = 1000
  config.progress_bar = False
  config.stage2.num_epochs = 1
  return config
