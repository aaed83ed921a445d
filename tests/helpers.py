"""Helpers shared by several test files: paths, skip markers, tiny configs and tiny data."""

import importlib.util
import json
import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import base
from ltjax.data import cifar_pickle
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


class Interrupt(Exception):
  """Raised by ``interrupt_at``: a kill in the middle of training, as tests simulate it."""


def interrupt_at(stop_step):
  """A training hook that raises Interrupt right after step ``stop_step``."""

  def hook(step, state):
    del state
    if step == stop_step:
      raise Interrupt(step)

  return hook


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


def write_cifar_folder(root, name, per_class, test_per_class, rng):
  """CIFAR's python-pickle folder of ``name`` under ``root`` (protocol 4), random images."""
  num_classes = 10 if name == 'cifar10' else 100
  folder = os.path.join(root, cifar_pickle.FOLDERS[name])
  os.makedirs(folder)
  for split, n in (('train', per_class), ('test', test_per_class)):
    labels = rng.permutation(np.repeat(np.arange(num_classes), n))
    images = rng.integers(0, 256, (len(labels), 3 * 32 * 32), dtype=np.uint8)
    files = cifar_pickle.SPLIT_FILES[name][split]
    for file, rows in zip(files, np.array_split(np.arange(len(labels)), len(files))):
      batch = {
          b'data': images[rows],
          cifar_pickle.LABEL_KEYS[name]: [int(v) for v in labels[rows]],
          b'batch_label': b'stand-in',
          b'filenames': [b'x.png'] * len(rows),
      }
      with open(os.path.join(folder, file), 'wb') as f:
        pickle.dump(batch, f, protocol=4)
  names = [f'class_{c}'.encode() for c in range(num_classes)]
  with open(os.path.join(folder, cifar_pickle.META_FILES[name]), 'wb') as f:
    pickle.dump({cifar_pickle.CLASS_NAME_KEYS[name]: names}, f, protocol=4)
  return root


def write_list_folder(root, dataset, per_split, rng, max_eval=0):
  """A list-file data set's folder (``listfile.SPLITS[dataset]``) over a few real JPEGs.

  Every class is in the training list ``per_split['train']`` times; the other lists hold
  ``per_split[split]`` per class, cut to ``max_eval`` lines when that is > 0.
  """
  layout = listfile.SPLITS[dataset]
  os.makedirs(root, exist_ok=True)
  files = []
  for i in range(8):
    size = (20 + 3 * i, 16 + 2 * i)
    image = Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    path = f'n0000000{i}_{i}.JPEG' if layout.class_folders else f'images/img_{i}.jpg'
    full = os.path.join(root, path.split('_')[0], path) if layout.class_folders else None
    full = full or os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    image.save(full, quality=90)
    files.append(path)
  for split, name in layout.files.items():
    labels = np.concatenate([np.arange(layout.num_classes)] * per_split.get(split, 1))
    if split != 'train' and max_eval:  # Evaluation lists may cover only the first classes.
      labels = labels[:max_eval]
    with open(os.path.join(root, name), 'w') as f:
      for j, label in enumerate(labels):
        f.write(f'{files[j % len(files)]} {label}\n')
  return root


def write_smuggling_pth(path, command: str):
  """A torch zip archive whose pickle calls os.system(command) on unpickling: what an attacker
  writes ({'conv1.weight': os.system(...)}, GLOBAL os.system REDUCEd), for refusal tests."""
  command = command.encode()
  evil = (
      b'\x80\x02}X\x0c\x00\x00\x00conv1.weightcos\nsystem\nX'
      + struct.pack('<I', len(command))
      + command
      + b'\x85Rs.'
  )
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('evil/data.pkl', evil)
    archive.writestr('evil/version', '3\n')
  return evil
