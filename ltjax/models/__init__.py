"""Models: a backbone (images -> features) and a head (features -> logits).

``build_model`` maps ``config.model`` through explicit tables to a
:class:`Classifier`, whose parameters live under two stable names:

  params/backbone/...            everything before the pooled feature
  params/head/kernel, head/bias  the classifier (W is stored as (d, C))

Optimiser masks, frozen groups and SAM perturbation subsets are regexes over
these paths (see ``ltjax.optim``). ``load_pretrained`` (``ltjax.models.pretrained``)
fills the ResNets from torchvision-format weights (``config.model.pretrained``).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ltjax.models import heads
from ltjax.models import pretrained
from ltjax.models import resnet
from ltjax.models import resnet_cifar
from ltjax.models.pretrained import load_pretrained
from ltjax.models.small_cnn import SmallCNN

# config.dtype -> the backbone's compute dtype (parameters, head and logits stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# name -> constructor(dtype=...) of a backbone module.
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    'small_cnn': SmallCNN,
    **resnet_cifar.BACKBONES,
    **resnet.BACKBONES,
}

# model.head_init -> the kernel init of the linear heads ('torch' is PyTorch's nn.Linear default).
HEAD_INITS = heads.HEAD_INITS


def _head_init(c: ml_collections.ConfigDict) -> str:
  # .get: configs written before the key existed meant PyTorch's default.
  return c.get('head_init', 'torch')


# name -> builder(model_config) -> constructor(num_classes=...) of a head module.
HEADS: dict[str, Callable[[ml_collections.ConfigDict], Callable[..., nn.Module]]] = {
    'linear': lambda c: functools.partial(heads.LinearHead, head_init=_head_init(c)),
    # Logits are cosines times head_scale (LDAM keeps scale 1 here and s = 30 in its loss).
    'cosine': lambda c: functools.partial(heads.CosineHead, scale=c.head_scale),
    # Learnable weight scaling: stage 2 trains only ^head/scale$.
    'lws': lambda c: functools.partial(heads.LWSHead, head_init=_head_init(c)),
    # Inference-time tau-normalisation of a linear head (same parameters as 'linear').
    'tau_norm': lambda c: functools.partial(
        heads.TauNormHead, tau=c.head_tau, head_init=_head_init(c)
    ),
    # Fixed simplex ETF (a function of head_seed); only the bias (and norms) train.
    'etf': lambda c: functools.partial(heads.ETFHead, seed=c.head_seed),
    'etf_train_norm': lambda c: functools.partial(heads.ETFHead, seed=c.head_seed, train_norm=True),
    # Linear head plus LWR's projection MLP of its class vectors (head/projection/...).
    'lwr': lambda c: functools.partial(
        heads.LWRHead, projection_features=c.lwr_projection_dim or None, head_init=_head_init(c)
    ),
}

# The heads whose kernel model.head_init sets: those sharing LinearHead's kernel and bias, so
# that LWS / tau-norm / LWR trained from scratch start as the linear head would. The cosine
# and ETF heads keep their own inits (LDAM's NormedLinear is not an nn.Linear, so LDAM-DRW's
# re-init skips it) and refuse any head_init but the default.
HEAD_INIT_HEADS = ('linear', 'lws', 'tau_norm', 'lwr')


def check_head_init(head: str, head_init: str) -> None:
  """Raises ValueError unless ``head_init`` names an init that applies to ``head``."""
  if head_init not in HEAD_INITS:
    raise ValueError(f'Unknown model.head_init {head_init!r}; valid names: {sorted(HEAD_INITS)}.')
  if head_init != 'torch' and head not in HEAD_INIT_HEADS:
    raise ValueError(
        f'model.head_init={head_init!r} sets the kernel of the heads {list(HEAD_INIT_HEADS)}; '
        f"model.head={head!r} has its own init: leave model.head_init='torch'."
    )


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


def build_model(
    model_config: ml_collections.ConfigDict, num_classes: int, dtype: Any = jnp.float32
) -> Classifier:
  """Builds the classifier named by ``model_config.name`` / ``.head``.

  Args:
    model_config: ``config.model`` (keys ``name``, ``head`` and the head's
      settings; ``head_init`` applies to the heads of ``HEAD_INIT_HEADS`` only).
    num_classes: number of output classes C.
    dtype: compute dtype of the backbone (``jnp.bfloat16`` for mixed precision;
      parameters stay float32 and the head and logits are float32).
  """
  kwargs = {'dtype': dtype}
  bn_scale = model_config.get('bn_scale_init', 1.0)
  if bn_scale != 1.0:  # EWB's "fixed BN" analysis: every BN scale starts at this value.
    if model_config.name not in resnet.BACKBONES:
      raise ValueError(
          f'model.bn_scale_init applies to the ResNets of ltjax.models.resnet '
          f'({sorted(resnet.BACKBONES)}), not to model.name={model_config.name!r}.'
      )
    kwargs['bn_scale'] = float(bn_scale)
  width = model_config.get('width', 0)
  if width:  # A narrower (or wider) copy of a ResNet: same depth, layout and parameter names.
    if (
        model_config.name not in resnet.BACKBONES
        and model_config.name not in resnet_cifar.BACKBONES
    ):
      raise ValueError(
          f'model.width applies to the ResNets ({sorted(resnet_cifar.BACKBONES)} and '
          f'{sorted(resnet.BACKBONES)}), not to model.name={model_config.name!r}; '
          "leave it 0 (the architecture's own width)."
      )
    if width < 0:
      raise ValueError(f"model.width={width} must be positive (or 0: the architecture's own).")
    kwargs['width'] = int(width)
  backbone = _lookup(BACKBONES, model_config.name, 'model.name')(**kwargs)
  head_builder = _lookup(HEADS, model_config.head, 'model.head')
  check_head_init(model_config.head, _head_init(model_config))
  head = head_builder(model_config)(num_classes=num_classes)
  return Classifier(backbone=backbone, head=head)
