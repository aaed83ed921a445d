"""Parameter paths: the names by which optimisers, losses and stages select parameters.

A parameter's path is its pytree key path joined by '/', e.g.
``backbone/stage1_block0/conv1/kernel`` or ``head/kernel``. Every choice of a
parameter subset in ltjax (which parameters decay, train, are perturbed by SAM
or CC-SAM, or are carried over from stage 1) is a regular expression that must
match a whole path (``re.fullmatch``).
"""

import re
from typing import Any

import jax


def path_str(path) -> str:
  """'backbone/stage1_block0/conv1/kernel' for a pytree key path."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
  return '/'.join(parts)


def path_mask(params, regex: str):
  """Pytree of bools: True where the '/'-joined parameter path fully matches ``regex``."""
  pattern = re.compile(regex)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: bool(pattern.fullmatch(path_str(path))), params
  )


def named_leaves(tree) -> list[tuple[str, Any]]:
  """[(path, leaf)] of ``tree`` in its leaf order."""
  return [(path_str(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]
