"""Test setup: 8 simulated CPU devices and JAX's persistent compilation cache.

XLA_FLAGS must be set before JAX initialises its backend, so this runs before
any test module imports jax. Single-device behaviour is tested on a 1-device
mesh (``ltjax.train.sharding.make_mesh(jax.devices()[:1])``).
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
jax.config.update('jax_compilation_cache_dir',
                  os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache')))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
# Tests compare against float64 numpy: full float32 products on GPUs too (whose
# default is TF32 and would need 1e-3 tolerances). No effect on CPU.
jax.config.update('jax_default_matmul_precision', 'float32')

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
requires_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST_DIR) and not os.environ.get('CI'),
    reason='Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)')


def synthetic_data_config(**overrides):
  """config.data of synthetic 10-class gratings, 40 per class, long-tailed to 40 ... 10."""
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config().data
  config.name = 'synthetic'
  config.synthetic.per_class = 40
  config.imbalance_ratio = 4.0
  config.update(overrides)
  return config


def tiny_config(**overrides):
  """A whole run on that data: small CNN, batch 16, 12 steps; flattened-key overrides."""
  from configs import base  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  config.data = synthetic_data_config(augment='crop_flip', crop_padding=2)
  config.batch_size = 16
  config.eval_batch_size = 200
  config.num_epochs = 1
  config.num_train_steps = 12
  config.log_every_steps = 4
  config.eval_every_epochs = 100
  config.optim.lr = 0.05
  config.progress_bar = False
  config.update_from_flattened_dict(overrides)
  return config
