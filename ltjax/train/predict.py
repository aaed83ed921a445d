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
"""

from typing import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from ltjax import data
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MASK
from ltjax.eval import metrics
from ltjax.train import sharding

PredictStep = Callable[..., dict[str, jax.Array]]


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

  Returns every output (N, ...) plus LABEL (N,).
  """
  chunks: dict[str, list[np.ndarray]] = {}
  for local in batches:
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

  Of the step's outputs, only the predicted classes come back to the host.
  """

  def predicted_class(state, inputs):
    return {'prediction': jnp.argmax(step(state, inputs)['logits'], -1)}

  out = predict(state, predicted_class, batches, mesh=mesh)
  return metrics.classification_metrics(
      out['prediction'],
      out[LABEL],
      train_counts,
      many_threshold=eval_config.many_threshold,
      few_threshold=eval_config.few_threshold,
  )
