"""Models: a backbone (images -> features) and a head (features -> logits).

``build_model`` maps ``config.model`` through explicit tables to a
:class:`Classifier`, whose parameters live under two stable names:

  params/backbone/...            everything before the pooled feature
  params/head/kernel, head/bias  the classifier (W is stored as (d, C))

Optimiser masks, frozen groups and SAM perturbation subsets are regexes over
these paths (see ``ltjax.optim``).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltjax.models import heads
from ltjax.models import resnet
from ltjax.models import resnet_cifar
from ltjax.models.small_cnn import SmallCNN

# name -> constructor(dtype=...) of a backbone module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'small_cnn': SmallCNN,
    **resnet_cifar.BACKBONES,
    **resnet.BACKBONES,
}

# name -> constructor(num_classes=...) of a head module.
HEADS: dict[str, Callable[..., nn.Module]] = {
    'linear': heads.LinearHead,
}


class Classifier(nn.Module):
  """backbone -> features -> head -> logits. Returns ``(logits, features)``."""

  backbone: nn.Module
  head: nn.Module

  def __call__(self, x: jax.Array, *, train: bool):
    features = self.backbone(x, train=train)
    logits = self.head(features)
    return logits.astype(jnp.float32), features


def _lookup(table: dict[str, Any], name: str, what: str):
  if name not in table:
    raise ValueError(f'Unknown {what} {name!r}; valid names: {sorted(table)}.')
  return table[name]


def build_model(model_config: ml_collections.ConfigDict, num_classes: int,
                dtype: Any = jnp.float32) -> Classifier:
  """Builds the classifier named by ``model_config.name`` / ``.head``.

  Args:
    model_config: ``config.model`` (keys ``name`` and ``head``).
    num_classes: number of output classes C.
    dtype: compute dtype of the backbone (``jnp.bfloat16`` for mixed precision;
      parameters stay float32 and the head and logits are float32).
  """
  backbone = _lookup(BACKBONES, model_config.name, 'model.name')(dtype=dtype)
  head = _lookup(HEADS, model_config.head, 'model.head')(num_classes=num_classes)
  return Classifier(backbone=backbone, head=head)
