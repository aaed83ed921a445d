"""Test setup: 8 simulated CPU devices, JAX's persistent compilation cache, shared fixtures.

XLA_FLAGS must be set before JAX initialises its backend, so this runs before
any test module imports jax. Single-device behaviour is tested on a 1-device
mesh (``ltjax.train.sharding.make_mesh(jax.devices()[:1])``). Helper functions
shared by test files live in helpers.py; only pytest fixtures live here.
"""

import os

os.environ['XLA_FLAGS'] = (
    os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
).strip()

import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from helpers import REPO  # pylint: disable=g-import-not-at-top
from helpers import tiny_two_stage_config  # pylint: disable=g-import-not-at-top
from ltjax import train  # pylint: disable=g-import-not-at-top

jax.config.update(
    'jax_compilation_cache_dir',
    os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache')),
)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.2)
# Tests compare against float64 numpy: full float32 products on GPUs too (whose
# default is TF32 and would need 1e-3 tolerances). No effect on CPU.
jax.config.update('jax_default_matmul_precision', 'float32')


@pytest.fixture
def x64():
  """64-bit JAX for the duration of a test."""
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope='session')
def trained_two_stage(tmp_path_factory):
  """(workdir, final state, results) of one tiny_two_stage_config run, trained once."""
  workdir = str(tmp_path_factory.mktemp('report') / 'run')
  state, results = train.train_and_evaluate(tiny_two_stage_config(), workdir)
  return workdir, jax.device_get(state), results
