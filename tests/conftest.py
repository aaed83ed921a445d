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
