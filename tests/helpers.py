"""Helpers shared by several test files: paths, skip markers, tiny configs and tiny data."""

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import base
from ltjax.data import listfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
requires_fashion_mnist = pytest.mark.skipif(
    not os.path.exists(FASHION_MNIST_DIR) and not os.environ.get('CI'),
    reason='Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)',
)

requires_tfds = pytest.mark.skipif(
    importlib.util.find_spec('tensorflow_datasets') is None,
    reason='tensorflow-datasets not installed (pip install ltjax[tfds])',
)


def synthetic_data_config(**overrides):
  """config.data of synthetic 10-class gratings, 40 per class, long-tailed to 40 ... 10."""
  config = base.get_config().data
  config.name = 'synthetic'
  config.synthetic.per_class = 40
  config.imbalance_ratio = 4.0
  config.update(overrides)
  return config


def tiny_config(**overrides):
  """A whole run on that data: small CNN, batch 16, 12 steps; flattened-key overrides."""
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


def tiny_two_stage_config():
  """tiny_config with all three class groups and one stage-2 epoch (cRT head)."""
  return tiny_config(
      **{
          'data.augment': 'none',
          'eval.many_threshold': 30,
          'eval.few_threshold': 15,
          'stage2.num_epochs': 1,
          'stage2.head': 'reinit',
      }
  )


def read_rows(workdir):
  """The rows of ``workdir``'s metrics.jsonl."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def head_params(column_norms, d=4, seed=0):
  """{'backbone': ..., 'head': {'kernel': (d, C) with the given column norms, 'bias'}}."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  w = jax.random.normal(k1, (d, len(column_norms)))
  w = w / jnp.linalg.norm(w, axis=0) * jnp.asarray(column_norms)
  return {
      'backbone': {'w': jax.random.normal(k2, (3,))},
      'head': {'kernel': w, 'bias': jnp.full((len(column_norms),), 5.0)},
  }


def write_places_folder(root, num_classes, per_split, rng):
  """A Places-LT-shaped folder: list files over a few real JPEGs (paths may repeat)."""
  os.makedirs(os.path.join(root, 'images'))
  files = []
  for i in range(12):
    path = f'images/img_{i}.jpg'
    size = (20 + 3 * i, 16 + 2 * i)
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(
        os.path.join(root, path), quality=90
    )
    files.append(path)
  layout = listfile.SPLITS['places_lt']
  for split, name in layout.files.items():
    labels = np.concatenate([np.arange(num_classes)] * per_split[split])
    with open(os.path.join(root, name), 'w') as f:
      for j, label in enumerate(labels):
        f.write(f'{files[j % len(files)]} {label}\n')
