"""Classifier heads: features (B, d) -> logits (B, C).

Every head keeps its parameters under the module name ``head`` of
:class:`ltjax.models.Classifier`, so optimiser masks and perturbation subsets
can address the classifier as ``head/kernel`` and ``head/bias``.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_linear_init(fan_in: int):
  """PyTorch's default ``nn.Linear`` init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  The CC-SAM and weight-balancing code keep this default for the classifier
  (their kaiming init runs before the classifier is built), so it is ours too.
  """
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class LinearHead(nn.Module):
  """A linear classifier with bias, z = W f + b (computed in float32)."""

  num_classes: int

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    features = features.astype(jnp.float32)
    fan_in = features.shape[-1]
    kernel = self.param('kernel', torch_linear_init(fan_in),
                        (fan_in, self.num_classes))
    bias = self.param('bias', torch_linear_init(fan_in), (self.num_classes,))
    return features @ kernel + bias
