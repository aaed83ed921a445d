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
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ltjax import data
from ltjax import eval as ltjax_eval
from ltjax.train import sharding
from ltjax.train import steps
from ltjax.train.state import TrainState


RESIZED_FOR_EVAL = ('eval.image_size > 0: cached features come from the evaluation resize + '
                    'centre crop, which the training path does not apply')


def unavailable_reasons(*, head_only: bool, train_bn: bool, augment: str,
                        mixup_alpha: float, eval_image_size: int = 0) -> list[str]:
  """Why cached features would not equal the ordinary path (empty: they would).

  ``RESIZED_FOR_EVAL`` is the one reason ``stage2.feature_cache='on'``
  accepts (with a warning): for list-file data sets of varying image sizes,
  classifier re-training without augmentation has no uncached equivalent, and
  the centre-cropped features are what cRT-style re-training then means.
  """
  reasons = []
  if not head_only:
    reasons.append('stage2.trainable trains parameters outside head/')
  if train_bn:
    reasons.append("stage2.bn='update' changes the backbone's BatchNorm statistics "
                   "(set stage2.bn='frozen')")
  if augment != 'none':
    reasons.append(f"images are augmented ({augment!r}; set stage2.augment='none')")
  if mixup_alpha > 0:
    reasons.append('stage2.mixup_alpha > 0 mixes images')
  if eval_image_size > 0:
    reasons.append(RESIZED_FOR_EVAL)
  if jax.process_count() > 1:
    reasons.append('more than one process')
  return reasons


def make_feature_step(state: TrainState, mesh: Mesh, *, flip: bool):
  """Jitted backbone in inference mode: {'features'} (and {'flipped'} with ``flip``)."""

  def feature_step(state, batch):
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    backbone = functools.partial(state.apply_fn, variables, train=False,
                                 method=steps.backbone_method)
    out = {'features': backbone(batch['image'])}
    if flip:
      out['flipped'] = backbone(batch['image'][:, :, ::-1])
    return out

  return jax.jit(feature_step,
                 in_shardings=(sharding.replicated_like(state, mesh),
                               sharding.batch_sharded(mesh)),
                 out_shardings=sharding.batch_sharded(mesh),
                 compiler_options=steps.compiler_options(mesh))


class FeatureCache:
  """Features of the training set (on device) and of the evaluation splits (on host)."""

  def __init__(self, state: TrainState, mesh: Mesh, *, train_set, eval_sets: dict,
               batch_size: int, image_size: int | None, flip_tta: bool):
    self.mesh = mesh
    self.batch_size = batch_size
    extract = functools.partial(steps.collect_outputs, state, mesh=mesh, batch_size=batch_size,
                                image_size=image_size)
    train = extract(make_feature_step(state, mesh, flip=False), train_set)
    self.train_labels = train['label']
    self.train_features = jax.device_put(train['features'], sharding.replicated(mesh))
    eval_step = make_feature_step(state, mesh, flip=flip_tta)
    self.eval_features = {name: extract(eval_step, dataset)
                          for name, dataset in eval_sets.items()}
    self._gather = jax.jit(lambda table, index: table[index],
                           in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                           out_shardings=sharding.batch_sharded(mesh))
    self._head_logits = jax.jit(_head_logits,
                                in_shardings=(sharding.replicated_like(state, mesh),
                                              sharding.batch_sharded(mesh)),
                                out_shardings=sharding.batch_sharded(mesh))

  @property
  def feature_dim(self) -> int:
    return self.train_features.shape[-1]

  def train_batches(self, batches: data.TrainBatches, start_step: int,
                    num_steps: int) -> Iterator[dict[str, jax.Array]]:
    """Device batches {'features', 'label'} of the steps, in the sampler's order."""

    def indices():
      for step in range(start_step, start_step + num_steps):
        index = batches.indices(step)
        yield {'index': index.astype(np.int32), 'label': self.train_labels[index]}

    for batch in sharding.prefetch_to_device(indices(), self.mesh):
      yield {'features': self._gather(self.train_features, batch['index']),
             'label': batch['label']}

  def evaluate(self, state: TrainState, split: str, *, train_counts: np.ndarray,
               eval_config) -> dict:
    """Accuracy metrics of the head of ``state`` on the cached features of ``split``."""
    cached = self.eval_features[split]
    n, predictions = len(cached['label']), []
    for start in range(0, n, self.batch_size):
      rows = np.arange(start, start + self.batch_size)
      rows = np.where(rows < n, rows, 0)  # Fixed shape: one compilation.
      batch = {key: cached[key][rows] for key in ('features', 'flipped') if key in cached}
      logits = self._head_logits(state, sharding.to_global(batch, self.mesh))
      predictions.append(sharding.to_host(jnp.argmax(logits, -1)))
    return ltjax_eval.classification_metrics(
        np.concatenate(predictions)[:n], cached['label'], train_counts,
        many_threshold=eval_config.many_threshold, few_threshold=eval_config.few_threshold)


def _head_logits(state: TrainState, batch: dict[str, jax.Array]) -> jax.Array:
  """The head's logits; the mean with the flipped images' logits as ``eval_step``'s TTA."""
  head = functools.partial(state.apply_fn, {'params': state.params},
                           method=steps.head_method)
  logits = head(batch['features']).astype(jnp.float32)
  if 'flipped' in batch:
    logits = (logits + head(batch['flipped']).astype(jnp.float32)) / 2
  return logits
