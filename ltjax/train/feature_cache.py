"""Feature cache: classifier re-training on features extracted once.

The second stage of cRT (Kang et al. 2020), LWS, LORT and CC-SAM retrains only
the classifier for 10-30 epochs on a frozen backbone. When, in addition,
BatchNorm is frozen (running statistics, ``stage2.bn='frozen'``), the images
are not augmented (``stage2.augment='none'``) and there is no mixup, every
image's features are the same in every epoch. Extracting them once and
training the head on device-resident arrays is then exact -- the same
updates as running the frozen backbone each step -- and removes the backbone
from the loop: an epoch costs a gather and a head step per batch.

Features come from the evaluation preprocessing: the normalised image for
fixed-size sources (exactly what ``augment='none'`` trains on). With
``eval.image_size`` (large-scale sets) they are the resize + centre crop of
evaluation, which the training path does not apply: 'auto' then trains
through the backbone, 'on' trains on those features with a warning.
Evaluation during the stage uses cached test/validation features as well
(with ``eval.flip_tta``, the features of the flipped images too).

The cache is replicated on every device (N x D floats: 0.95 GB for ImageNet-LT
with ResNet-50 features); one process only.
"""

import functools
import time
from typing import Iterator

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ltjax import data
from ltjax.data.batch_keys import FEATURES
from ltjax.data.batch_keys import FLIPPED
from ltjax.data.batch_keys import IMAGE
from ltjax.data.batch_keys import INDEX
from ltjax.data.batch_keys import LABEL
from ltjax.train import config_check
from ltjax.train import predict
from ltjax.train import sharding
from ltjax.train import steps
from ltjax.train.stages import Stage
from ltjax.train.state import TrainState

# Why cached features would not be exact: config_check tells before anything runs.
RESIZED_FOR_EVAL = config_check.FEATURE_CACHE_RESIZED_FOR_EVAL
unavailable_reasons = config_check.feature_cache_unavailable_reasons


def make_feature_step(state: TrainState, mesh: Mesh, *, flip: bool):
  """Jitted backbone in inference mode: {FEATURES} (and {FLIPPED} with ``flip``)."""

  def feature_step(state, batch):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    backbone = functools.partial(
        state.apply_fn, variables, train=False, method=steps.backbone_method
    )
    out = {FEATURES: backbone(batch[IMAGE])}
    if flip:
      out[FLIPPED] = backbone(batch[IMAGE][:, :, ::-1])
    return out

  return jax.jit(
      feature_step,
      in_shardings=(sharding.replicated_like(state, mesh), sharding.batch_sharded(mesh)),
      out_shardings=sharding.batch_sharded(mesh),
      compiler_options=steps.compiler_options(mesh),
  )


def _head_logits(state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """The head's logits; the mean with the flipped images' logits as ``eval_step``'s TTA."""
  head = functools.partial(state.apply_fn, {'params': state.params}, method=steps.head_method)
  logits = head(batch[FEATURES]).astype(jnp.float32)
  if FLIPPED in batch:
    logits = (logits + head(batch[FLIPPED]).astype(jnp.float32)) / 2
  return {'logits': logits}


class FeatureCache:
  """Features of the training set (on device) and of the evaluation splits (on host)."""

  def __init__(
      self,
      state: TrainState,
      mesh: Mesh,
      *,
      train_set,
      eval_sets: dict,
      batch_size: int,
      image_size: int | None,
      flip_tta: bool,
  ):
    self.mesh = mesh
    self.batch_size = batch_size

    def extract(step, dataset):
      return predict.predict(
          state,
          step,
          predict.image_batches(dataset, batch_size=batch_size, image_size=image_size),
          mesh=mesh,
      )

    train = extract(make_feature_step(state, mesh, flip=False), train_set)
    self.train_labels = train[LABEL]
    self.train_features = jax.device_put(train[FEATURES], sharding.replicated(mesh))
    eval_step = make_feature_step(state, mesh, flip=flip_tta)
    self.eval_features = {name: extract(eval_step, dataset) for name, dataset in eval_sets.items()}
    self._gather = jax.jit(
        lambda table, index: table[index],
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
        out_shardings=sharding.batch_sharded(mesh),
    )
    self.head_step = jax.jit(
        _head_logits,
        in_shardings=(sharding.replicated_like(state, mesh), sharding.batch_sharded(mesh)),
        out_shardings=sharding.batch_sharded(mesh),
    )

  @property
  def feature_dim(self) -> int:
    return self.train_features.shape[-1]

  def train_batches(
      self, batches: data.TrainBatches, start_step: int, num_steps: int
  ) -> Iterator[dict[str, jax.Array]]:
    """Device batches {FEATURES, LABEL} of the steps, in the sampler's order."""

    def indices():
      for step in range(start_step, start_step + num_steps):
        index = batches.indices(step)
        yield {INDEX: index.astype(np.int32), LABEL: self.train_labels[index]}

    for batch in sharding.prefetch_to_device(indices(), self.mesh):
      yield {FEATURES: self._gather(self.train_features, batch[INDEX]), LABEL: batch[LABEL]}

  def eval_batches(self, split: str) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches {FEATURES, (FLIPPED,) LABEL, MASK} of ``split``'s cached features."""
    return predict.array_batches(self.eval_features[split], self.batch_size)


def for_stage(
    stage: Stage, state: TrainState, mesh: Mesh, *, head_only: bool, train_set, eval_splits: dict
) -> FeatureCache | None:
  """The stage's feature cache when ``stage.feature_cache`` asks for one and it is exact."""
  if stage.feature_cache == 'off':
    return None
  config = stage.config
  reasons = unavailable_reasons(
      head_only=head_only,
      train_bn=stage.train_bn,
      augment=config.data.augment,
      mixup_alpha=config.data.mixup_alpha,
      eval_image_size=config.eval.image_size,
  )
  if stage.feature_cache == 'on' and reasons == [RESIZED_FOR_EVAL]:
    logging.warning(
        "%s: %s; training the head on them as stage2.feature_cache='on' asks.",
        stage.name,
        RESIZED_FOR_EVAL,
    )
    reasons = []
  if reasons:
    message = 'the feature cache would not be exact: ' + '; '.join(reasons)
    if stage.feature_cache == 'on':
      raise ValueError(f"{stage.name}: stage2.feature_cache='on' but {message}.")
    logging.info('%s: training through the backbone, since %s.', stage.name, message)
    return None
  start = time.perf_counter()
  cache = FeatureCache(
      state,
      mesh,
      train_set=train_set,
      eval_sets=eval_splits,
      batch_size=config.eval_batch_size,
      image_size=config.eval.image_size if config.eval.image_size > 0 else None,
      flip_tta=config.eval.flip_tta,
  )
  logging.info(
      '%s: feature cache of %d training images (dimension %d) built in %.1f s; '
      'the head trains on it.',
      stage.name,
      len(cache.train_labels),
      cache.feature_dim,
      time.perf_counter() - start,
  )
  return cache
