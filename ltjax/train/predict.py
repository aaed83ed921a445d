"""Predictions over a data set: one host-side loop over a jitted predict step.

The loop's periodic evaluation, the feature cache (extracting features, and
evaluating the head on them) and a workdir's report all run ``predict``:
host-local batches of a fixed global size (padded rows carry MASK False, so
the step compiles once) become global arrays sharded on the batch axis, the
jitted step runs on every device, and only its outputs come back to the host,
batch by batch, with the padded rows dropped. Memory is bounded by the
outputs, never by the images. Since padding is free, an evaluation batch size
the devices do not divide is rounded up to the next multiple of the device
count (``eval_batch_size``): ``eval_batch_size=1000`` runs on 16 devices as 1008.

A predict step is ``step(state, inputs) -> {name: (B, ...) array}``, with
``inputs`` the batch without LABEL and MASK: ``steps.make_eval_step``
(logits and features of images), ``feature_cache.make_feature_step``
(features only) or the feature cache's head step (logits of features).

With ``eval.flip_tta`` and ``eval.select_single_view`` the loop's evaluation
step also returns SINGLE_VIEW_LOGITS, the logits of the unflipped images
(``steps.make_eval_step(single_view=True)``, ``with_single_view_head``): flip-TTA computes them
anyway, so the single-view balanced accuracy the best checkpoint is chosen on
(the weight-balancing demo's selection) costs no extra forward pass.
"""

from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltjax import data
from ltjax.data.batch_keys import FLIPPED
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MASK
from ltjax.eval import metrics
from ltjax.train import sharding
from ltjax.train import steps
from ltjax.train import stopping

PredictStep = Callable[..., dict[str, jax.Array]]
# A predict step's logits of the unflipped images, beside flip-averaged 'logits'.
SINGLE_VIEW_LOGITS = steps.SINGLE_VIEW_LOGITS
# ``evaluate``'s balanced accuracy of their argmax (a metrics.jsonl column).
SINGLE_VIEW_BALANCED_ACCURACY = 'single_view_balanced_accuracy'


def eval_batch_size(batch_size: int) -> int:
  """``batch_size`` rounded up to a multiple of the device count (padded rows are masked)."""
  devices = jax.device_count()
  return -(-batch_size // devices) * devices


def image_batches(
    dataset, *, batch_size: int, image_size: int | None = None
) -> Iterator[dict[str, np.ndarray]]:
  """This process's evaluation batches of ``dataset`` (``ltjax.data.eval_batches``)."""
  return data.eval_batches(
      dataset,
      global_batch_size=eval_batch_size(batch_size),
      image_size=image_size,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )


def array_batches(
    arrays: dict[str, np.ndarray], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """Fixed-size batches of in-memory arrays (one process), padded like ``eval_batches``."""
  n = len(next(iter(arrays.values())))
  batch_size = eval_batch_size(batch_size)
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    mask = rows < n
    rows = np.where(mask, rows, 0)
    yield {**{key: value[rows] for key, value in arrays.items()}, MASK: mask}


def predict(
    state, step: PredictStep, batches: Iterable[dict[str, np.ndarray]], *, mesh: Mesh
) -> dict[str, np.ndarray]:
  """``step``'s outputs over ``batches`` in order, on the host, padded rows dropped.

  Returns every output (N, ...) plus LABEL (N,). Raises ``stopping.Interrupted``
  between batches when the command was asked to stop.
  """
  chunks: dict[str, list[np.ndarray]] = {}
  for local in batches:
    stopping.check_batch()  # A stop request abandons the pass (its caller redoes it).
    batch = sharding.to_global(local, mesh)
    out = dict(step(state, {k: v for k, v in batch.items() if k not in (LABEL, MASK)}))
    out[LABEL], out[MASK] = batch[LABEL], batch[MASK]
    out = {key: sharding.to_host(value) for key, value in out.items()}
    keep = out.pop(MASK)
    for key, value in out.items():
      chunks.setdefault(key, []).append(value[keep])
  return {key: np.concatenate(value) for key, value in chunks.items()}


def evaluate(
    state,
    step: PredictStep,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    mesh: Mesh,
    train_counts: np.ndarray,
    eval_config: ml_collections.ConfigDict,
) -> dict:
  """Accuracy metrics (``ltjax.eval.metrics``) of the argmax of ``step``'s 'logits'.

  Groups from ``eval_config`` (``metrics.group_options``). A step that also
  returns SINGLE_VIEW_LOGITS adds SINGLE_VIEW_BALANCED_ACCURACY, the balanced
  accuracy of their argmax. Of the step's outputs, only the predicted classes
  come back to the host.
  """

  def predicted_class(state, inputs):
    out = step(state, inputs)
    classes = {'prediction': jnp.argmax(out['logits'], -1)}
    if SINGLE_VIEW_LOGITS in out:
      classes['single_view_prediction'] = jnp.argmax(out[SINGLE_VIEW_LOGITS], -1)
    return classes

  out = predict(state, predicted_class, batches, mesh=mesh)
  result = metrics.classification_metrics(
      out['prediction'], out[LABEL], train_counts, **metrics.group_options(eval_config)
  )
  if 'single_view_prediction' in out:
    result[SINGLE_VIEW_BALANCED_ACCURACY] = metrics.balanced_accuracy(
        out['single_view_prediction'], out[LABEL], len(train_counts)
    )
  return result


def with_single_view_head(head_step: PredictStep) -> PredictStep:
  """A feature-cache head step that also returns SINGLE_VIEW_LOGITS.

  The cache's batches carry FLIPPED features with ``eval.flip_tta``; the head
  on FEATURES alone gives the unflipped images' logits (the head is cheap).
  """

  def step(state, inputs):
    out = dict(head_step(state, inputs))
    unflipped = {key: value for key, value in inputs.items() if key != FLIPPED}
    out[SINGLE_VIEW_LOGITS] = head_step(state, unflipped)['logits']
    return out

  return step
