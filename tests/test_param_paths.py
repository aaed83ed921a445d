"""Tests for ltjax.param_paths: '/'-joined parameter paths and their regex masks."""

import collections

import jax
import numpy as np

from ltjax import param_paths

PARAMS = {
    'backbone': {
        'stage1_block0': {
            'conv1': {'kernel': np.ones((3, 3))},
            'bn1': {'scale': np.ones(3), 'bias': np.zeros(3)},
        },
        'stem_conv': {'kernel': np.ones(2)},
    },
    'head': {'kernel': np.full((4, 2), 2.0), 'bias': np.zeros(2)},
}
Pair = collections.namedtuple('Pair', ['mu', 'nu'])  # Its leaves are attributes.
PATHS = [
    'backbone/stage1_block0/bn1/bias',
    'backbone/stage1_block0/bn1/scale',
    'backbone/stage1_block0/conv1/kernel',
    'backbone/stem_conv/kernel',
    'head/bias',
    'head/kernel',
]


def test_path_str_joins_dict_keys_attributes_and_indices():
  paths = [param_paths.path_str(path) for path, _ in jax.tree_util.tree_leaves_with_path(PARAMS)]
  assert paths == PATHS  # Sorted keys: the pytree leaf order.
  # Sequence indices and dataclass-style attributes are path parts too.
  mixed = {
      'layers': [np.ones(1), (np.ones(1), np.ones(1))],
      'state': Pair(mu=np.ones(1), nu=np.ones(1)),
  }
  assert [param_paths.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(mixed)] == [
      'layers/0',
      'layers/1/0',
      'layers/1/1',
      'state/mu',
      'state/nu',
  ]
  assert param_paths.path_str(()) == ''


def test_path_mask_fully_matches_the_regex():
  mask = param_paths.path_mask(PARAMS, r'.*/kernel')
  assert mask == {
      'backbone': {
          'stage1_block0': {'conv1': {'kernel': True}, 'bn1': {'scale': False, 'bias': False}},
          'stem_conv': {'kernel': True},
      },
      'head': {'kernel': True, 'bias': False},
  }
  # A full match: 'head' alone or a prefix selects nothing; alternatives and groups work.
  assert not any(jax.tree.leaves(param_paths.path_mask(PARAMS, 'head')))
  assert not any(jax.tree.leaves(param_paths.path_mask(PARAMS, 'backbone/stem')))
  selected = param_paths.path_mask(PARAMS, r'head/.*|backbone/stage1_block0/bn1/(scale|bias)')
  assert [name for name, m in param_paths.named_leaves(selected) if m] == [
      PATHS[0],
      PATHS[1],
      PATHS[4],
      PATHS[5],
  ]


def test_named_leaves_pairs_each_path_with_its_leaf_in_order():
  named = param_paths.named_leaves(PARAMS)
  assert [name for name, _ in named] == PATHS
  for (name, leaf), expected in zip(named, jax.tree.leaves(PARAMS)):
    assert leaf is expected, name
  assert param_paths.named_leaves({}) == []
