"""The default run, shortened, gives its recorded table on every tested version (issue #26).

``configs/default.py`` with stage 1 cut to 3 epochs (the cosine schedule over those 3) and
stage 2 to 1, each evaluated once at its end, trained in-process on the suite's 8 simulated CPU
devices. The recorded table, ``tests/recorded/default_run_short.json``, was made on the oldest
end (constraints/oldest.txt on Python 3.11); the newest end (scripts/newest.sh: Python 3.13, the
newest jax, flax, optax, orbax, numpy) and every version between must give the same numbers to
within floating-point noise: ``TOLERANCE`` points of test accuracy (10,000 test images, 1,000
a class). How that tolerance was chosen is written beside the numbers in the recorded file.

Re-record (on the oldest end; only when the run itself changes on purpose):

    LTJAX_RECORD_DEFAULT_RUN=1 python -m pytest tests/test_default_run.py
"""

import json
import os
import platform

import jax
import pytest

from helpers import REPO
from helpers import requires_fashion_mnist
from ltjax import train
from ltjax.configs import default

RECORDED = os.path.join(REPO, 'tests', 'recorded', 'default_run_short.json')
COLUMNS = ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few')
# Percentage points of test accuracy any column may move by between versions: 5x the largest
# spread measured (0.10 points; RECORDED's "tolerance" entry lists the runs it covers).
TOLERANCE = {column: 0.5 for column in COLUMNS}


def short_default_config():
  config = default.get_config()
  config.num_epochs = 3
  config.eval_every_epochs = 3
  config.stage2.num_epochs = 1
  config.stage2.eval_every_epochs = 1
  return config


def table(workdir):
  """{stage: {column: percent}} from each stage's stage_results.json."""
  out = {}
  for stage, sub in (('stage1', ''), ('stage2', 'stage2')):
    with open(os.path.join(workdir, sub, 'stage_results.json')) as f:
      metrics = json.load(f)['test']
    out[stage] = {c: round(100 * float(metrics[c]), 2) for c in COLUMNS}
  return out


def versions():
  import flax  # pylint: disable=g-import-not-at-top
  import numpy  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint  # pylint: disable=g-import-not-at-top

  return {
      'python': platform.python_version(),
      'jax': jax.__version__,
      'jaxlib': jax.lib.__version__ if hasattr(jax.lib, '__version__') else None,
      'flax': flax.__version__,
      'optax': optax.__version__,
      'orbax-checkpoint': orbax.checkpoint.__version__,
      'numpy': numpy.__version__,
  }


@requires_fashion_mnist
def test_short_default_run_gives_the_recorded_table(tmp_path):
  workdir = str(tmp_path / 'default')
  train.train_and_evaluate(short_default_config(), workdir)
  got = table(workdir)
  if os.environ.get('LTJAX_RECORD_DEFAULT_RUN') == '1':
    old = {}
    if os.path.exists(RECORDED):
      with open(RECORDED) as f:
        old = json.load(f)
    os.makedirs(os.path.dirname(RECORDED), exist_ok=True)
    with open(RECORDED, 'w') as f:
      json.dump(
          {'table': got, 'versions': versions(), 'tolerance': old.get('tolerance', {})},
          f,
          indent=1,
      )
      f.write('\n')
    pytest.skip(f'recorded {RECORDED}: {got}')
  with open(RECORDED) as f:
    recorded = json.load(f)
  off = {
      (stage, c): (got[stage][c], recorded['table'][stage][c])
      for stage in recorded['table']
      for c in COLUMNS
      if abs(got[stage][c] - recorded['table'][stage][c]) > TOLERANCE[c]
  }
  assert not off, (
      f'the short default run moved beyond floating-point noise {TOLERANCE}: (stage, column):'
      f' (now, recorded on {recorded["versions"]}) {off}; whole table now {got}'
  )
