"""The large-scale train transform's per-batch half, run inside the jitted step.

The ImageNet-LT / Places-LT / iNaturalist train transform (Decoupling's
lineage) is RandomResizedCrop -> HorizontalFlip -> ColorJitter(0.4, 0.4, 0.4)
(not for iNaturalist) -> ToTensor -> Normalize. The crop must run per image
where it is decoded (host workers). The rest is per-pixel arithmetic that the
host does in float32 at a few ms per 224 px image (``ltjax.data.augment``),
which is most of the host's time per image; on the accelerator it is nearly
free. So with ``config.data.device_augment``, ``pipeline.TrainBatches`` sends
the uint8 crops (4x fewer bytes than float32) and the random draws of that
batch (``augment.flip_draws``, ``augment.color_jitter_params``, drawn from the
same generator in the same order as the host path), and ``apply`` finishes the
transform on device:

  x = float32(uint8 crop); mirrored where FLIP;
  for each of the image's jitter transforms, in its drawn order, with factor f:
    brightness  x = f x
    contrast    x = f x + (1 - f) mean(gray(x))
    saturation  x = f x + (1 - f) gray(x)        gray = 0.299 R + 0.587 G + 0.114 B
    x = clip(x, 0, 255)
  (x / 255 - mean) / std.

The only difference from the host path is that the host rounds the jittered
image to uint8 before normalising (at most half a grey level).
"""

import jax
import jax.numpy as jnp

from ltjax.data import augment
from ltjax.data.batch_keys import FLIP
from ltjax.data.batch_keys import IMAGE
from ltjax.data.batch_keys import JITTER_FACTORS
from ltjax.data.batch_keys import JITTER_OPS

KEYS = (FLIP, JITTER_OPS, JITTER_FACTORS)


def _jitter(x: jax.Array, ops: jax.Array, factors: jax.Array) -> jax.Array:
  """``augment.color_jitter``'s blends on a float32 (B, H, W, C) batch in [0, 255]."""
  # One channel: gray is the image itself, so saturation is the identity, as on the host.
  luma = jnp.asarray(augment.LUMA_WEIGHTS if x.shape[-1] == 3 else (1.0,), x.dtype)
  for k in range(ops.shape[1]):  # n <= 3 static positions; each image its own op per position.
    op = ops[:, k][:, None, None, None]
    f = factors[:, k][:, None, None, None]
    gray = jnp.einsum('bhwc,c->bhw', x, luma)[..., None]
    degenerate = jnp.where(
        op == augment.JITTER_CONTRAST,
        jnp.mean(gray, axis=(1, 2, 3), keepdims=True),
        jnp.where(op == augment.JITTER_SATURATION, gray, 0.0),
    )
    x = jnp.clip(f * x + (1.0 - f) * degenerate, 0.0, 255.0)
  return x


def apply(batch: dict, mean, std) -> dict:
  """The batch with IMAGE augmented and normalised, the draws' keys removed.

  A batch without the keys (host-augmented, or cached features) is returned
  as it is.
  """
  if FLIP not in batch:
    return batch
  batch = dict(batch)
  x = batch[IMAGE].astype(jnp.float32)
  x = jnp.where(batch.pop(FLIP)[:, None, None, None], x[:, :, ::-1], x)
  ops, factors = batch.pop(JITTER_OPS), batch.pop(JITTER_FACTORS)
  x = _jitter(x, ops, factors)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  batch[IMAGE] = (x * (1.0 / 255.0) - mean) / std
  return batch
