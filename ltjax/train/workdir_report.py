"""From a workdir to its evaluation report: config, data, checkpoint, outputs.

(``ltjax.eval`` computes the report's metrics from arrays; this module gets
those arrays out of a trained workdir.)

``report_for_workdir`` rebuilds what a stage trained on from the
``config.json`` the loop saved, restores the parameters and BatchNorm
statistics of its best (or latest, or a given step's) checkpoint, runs the
jitted, sharded eval step over the test set (and validation, training and
open-set splits) with ``ltjax.train.predict``, and hands logits and features to
``ltjax.eval.report.build_report``. Only features and logits leave the device,
batch by batch, so memory is bounded by the outputs, never by the images.
"""

from absl import logging
import jax
import ml_collections
import numpy as np
import optax

from ltjax import data
from ltjax import files
from ltjax import models
from ltjax.eval import metrics as eval_metrics
from ltjax.eval import report as eval_report
from ltjax.train import predict
from ltjax.train import sharding
from ltjax.train import stages
from ltjax.train import steps
from ltjax.train.checkpoint import Checkpoints
from ltjax.train.checkpoint import load_config
from ltjax.train.state import TrainState
from ltjax.train.steps import affine_head


def load_state(
    workdir: str,
    config: ml_collections.ConfigDict,
    *,
    num_classes: int,
    input_shape,
    checkpoint: str = 'best',
) -> TrainState:
  """The model of ``config`` with the parameters of ``workdir``'s checkpoint.

  ``checkpoint``: 'best', 'latest' or a step number. The optimiser state is
  not restored (``tx`` is the identity), so any recipe's checkpoint loads.
  """
  model = models.build_model(config.model, num_classes, dtype=models.DTYPES[config.dtype])
  which, step = (
      (checkpoint, None) if checkpoint in ('best', 'latest') else ('latest', int(checkpoint))
  )
  if which == 'best':
    checkpoints = Checkpoints(workdir)
    try:
      has_best = checkpoints.best.best_step() is not None
    finally:
      checkpoints.close()
    if not has_best:
      logging.warning('%s has no best checkpoint; evaluating the latest.', workdir)
      which = 'latest'
  restored = stages.restore_variables(
      workdir, model, input_shape=input_shape, which=which, step=step
  )
  if restored is None:
    raise FileNotFoundError(
        f'{workdir} holds no {checkpoint} checkpoint; train it first '
        '(python launch/train.py --config=... --workdir=...).'
    )
  tx = optax.identity()
  return TrainState(
      step=restored['step'],
      params=restored['params'],
      batch_stats=restored['batch_stats'],
      opt_state=tx.init(restored['params']),
      rng=jax.random.PRNGKey(0),
      apply_fn=model.apply,
      tx=tx,
  )


def class_capped_subset(labels: np.ndarray, max_images: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of at most ``max_images`` samples, min(n_c, k) from each class.

  k is the largest per-class cap that fits, so tail classes keep all their
  images and no class disappears (a uniform subsample of iNaturalist would
  drop most two-image classes); the samples of a capped class are seeded.
  """
  counts = np.bincount(labels)
  lo, hi = 0, int(counts.max())
  while lo < hi:  # Largest k with sum(min(n_c, k)) <= max_images.
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if np.minimum(counts, mid).sum() <= max_images else (lo, mid - 1)
  rng = np.random.default_rng(seed)
  keep = [rng.permutation(np.flatnonzero(labels == c))[:lo] for c in range(len(counts))]
  return np.sort(np.concatenate(keep))


def report_for_workdir(
    workdir: str,
    *,
    checkpoint: str = 'best',
    sharpness_directions: int = 10,
    max_train_images: int = 50_000,
    eval_batch_size: int | None = None,
    config_overrides: dict | None = None,
) -> dict:
  """The full report (``ltjax.eval.report``) of ``workdir``'s checkpoint.

  Args:
    workdir: a stage's workdir (for a two-stage run, ``<workdir>/stage2`` is
      the final model).
    checkpoint: 'best', 'latest' or a step.
    sharpness_directions: random directions per radius of the sharpness curve.
    max_train_images: training images whose features give the open-set
      prototypes, the ``_train`` statistics and the sharpness curve. A larger
      training set is capped per class (``class_capped_subset``), so every
      class keeps its images up to the cap (iNaturalist's 437k features would
      need 3.6 GB).
    eval_batch_size: default the config's.
    config_overrides: flattened config keys to change before loading the data
      (e.g. {'data.data_dir': '/elsewhere'} when the data moved).
  """
  workdir = files.absolute(workdir)  # orbax needs absolute local paths; URLs stay URLs.
  config = load_config(workdir)
  if config_overrides:
    try:
      config.update_from_flattened_dict(config_overrides)
    except (KeyError, TypeError, AttributeError) as e:  # An unknown key, a value of another type.
      raise ValueError(
          f'--override {config_overrides} does not fit the config of {workdir}: {e}. Name keys '
          'of its config.json with values of their type, e.g. --override=data.data_dir=/data.'
      ) from e
  batch_size = eval_batch_size or config.eval_batch_size
  splits = data.load_datasets(config.data)
  image_size = config.eval.image_size if config.eval.image_size > 0 else None
  first = next(data.eval_batches(splits.test, global_batch_size=1, image_size=image_size))
  num_classes = len(splits.train_counts)
  state = load_state(
      workdir,
      config,
      num_classes=num_classes,
      input_shape=first['image'].shape[1:],
      checkpoint=checkpoint,
  )
  mesh = sharding.make_mesh()
  state = jax.device_put(state, sharding.replicated_like(state, mesh))
  eval_step = steps.make_eval_step(state, mesh, flip_tta=config.eval.flip_tta)

  def outputs(dataset):
    return predict.predict(
        state,
        eval_step,
        predict.image_batches(dataset, batch_size=batch_size, image_size=image_size),
        mesh=mesh,
    )

  test = outputs(splits.test)
  train_set = splits.train
  if len(train_set) > max_train_images:
    train_set = train_set.subset(
        class_capped_subset(np.asarray(train_set.labels), max_train_images)
    )
  train = outputs(train_set)
  val = outputs(splits.val) if splits.val is not None else None
  open_split = getattr(splits, 'open_test', None)
  open_test = outputs(open_split) if open_split is not None else None
  head = affine_head(state, test['features'].shape[-1])
  if head is None:
    logging.warning(
        'model.head=%r is not affine in the features: weight statistics use its '
        'raw kernel and the sharpness curve is skipped.',
        config.model.head,
    )
    kernel = np.asarray(state.params['head'].get('kernel'))
    bias = None
  else:
    kernel, bias = head
  report = eval_report.build_report(
      {k: test[k] for k in ('logits', 'features', 'label')},
      train=train,
      kernel=kernel,
      bias=bias,
      params=jax.device_get(state.params),
      train_counts=splits.train_counts,
      class_names=splits.train.class_names,
      val=val,
      open_test=open_test,
      **eval_metrics.group_options(config.eval),
      sharpness_directions=sharpness_directions if head is not None else 0,
      meta={
          'workdir': workdir,
          'checkpoint': checkpoint,
          'step': int(state.step),
          'data': config.data.name,
          'imbalance_ratio': config.data.imbalance_ratio,
          'model': config.model.name,
          'head': config.model.head,
          'loss': config.loss.name,
          'flip_tta': bool(config.eval.flip_tta),
      },
  )
  return report
