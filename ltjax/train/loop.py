"""The training loop: config -> data -> jitted steps -> metrics, checkpoints, plots.

``train_and_evaluate(config, workdir)`` is what ``launch/train.py`` and the
notebooks call. It runs stage 1 in ``workdir`` and, when
``config.stage2.num_epochs > 0``, the classifier re-training stage in
``workdir/stage2``, initialised from stage 1's best (or latest) checkpoint
with everything but ``stage2.trainable`` frozen. Each stage resumes from the
newest checkpoint in its directory if there is one; since the data order and
the step randomness are functions of the step, a resumed run ends with the
same parameters as an uninterrupted one.

Host syncs happen only at log, eval and checkpoint time: per-step metrics stay
on device until then. Non-finite losses are detected at those points, before
any checkpoint is written, so the last good checkpoint always survives.
"""

import dataclasses
import functools
import os
import sys
import time
from typing import Callable, Iterable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from ltjax import data
from ltjax import eval as ltjax_eval
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax.eval import plots
from ltjax.train import feature_cache
from ltjax.train import sharding
from ltjax.train.checkpoint import Checkpoints
from ltjax.train.checkpoint import save_config
from ltjax.train.state import TrainState
from ltjax.train.state import create_train_state
from ltjax.train.steps import make_eval_step
from ltjax.train.steps import make_train_step
from ltjax.train.writer import MetricWriter

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
Hook = Callable[[int, TrainState], None]  # Called after every step with (step, state).


def evaluate(state: TrainState, eval_step, dataset: data.ArrayDataset, *,
             mesh, batch_size: int, train_counts: np.ndarray,
             eval_config: ml_collections.ConfigDict) -> dict:
  """Accuracy metrics of ``state`` on ``dataset`` (see ltjax.eval.metrics)."""
  predictions, labels = [], []
  resize_crop = eval_config.image_size if eval_config.image_size > 0 else None
  for local in data.eval_batches(dataset, global_batch_size=batch_size,
                                 image_size=resize_crop,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count()):
    batch = sharding.to_global(local, mesh)
    out = eval_step(state, {'image': batch['image']})
    keep = sharding.to_host(batch['mask'])
    predictions.append(sharding.to_host(jnp.argmax(out['logits'], -1))[keep])
    labels.append(sharding.to_host(batch['label'])[keep])
  return ltjax_eval.classification_metrics(
      np.concatenate(predictions), np.concatenate(labels), train_counts,
      many_threshold=eval_config.many_threshold,
      few_threshold=eval_config.few_threshold)


def check_batch_size(batch_size: int, name: str) -> None:
  devices = jax.device_count()
  if batch_size % devices:
    raise ValueError(f'config.{name}={batch_size} is not divisible by the {devices} '
                     f'devices of the mesh; use a multiple of {devices}.')


class _TrainLog:
  """Keeps per-step metrics on device until log time; checks them for NaN/inf."""

  def __init__(self, writer: MetricWriter, schedule, steps_per_epoch: int, workdir: str,
               checkpoints: Checkpoints):
    self.writer = writer
    self.schedule = schedule
    self.steps_per_epoch = steps_per_epoch
    self.workdir = workdir
    self.checkpoints = checkpoints
    self.pending: list[tuple[int, dict]] = []
    self.last_time = time.perf_counter()
    self.images = 0

  def add(self, step: int, metrics: dict, batch_size: int) -> None:
    self.pending.append((step, metrics))
    self.images += batch_size

  def flush(self) -> dict | None:
    """Writes the mean of the pending metrics as one train row; raises on NaN/inf."""
    if not self.pending:
      return None
    steps = [s for s, _ in self.pending]
    rows = jax.device_get([m for _, m in self.pending])
    for step, row in zip(steps, rows):
      if not all(np.isfinite(v) for v in row.values()):
        kept = self.checkpoints.latest_step()
        raise FloatingPointError(
            f'Non-finite training metrics at step {step}: {row}. Training stopped '
            f'without saving this state; the last good checkpoint '
            f'({"step " + str(kept) if kept is not None else "none yet"}) is kept in '
            f'{self.workdir}/checkpoints. Lower config.optim.lr, check the inputs for '
            'NaN, or train in float32 (config.dtype).')
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    now = time.perf_counter()
    mean['images_per_second'] = self.images / max(now - self.last_time, 1e-9)
    mean['learning_rate'] = float(self.schedule(steps[-1]))
    step = steps[-1] + 1
    self.writer.write(step=step, epoch=step / self.steps_per_epoch, split='train', **mean)
    self.pending, self.images, self.last_time = [], 0, now
    return mean

  def restart_clock(self) -> None:
    """Excludes evaluation and checkpoint time from the next throughput."""
    self.last_time = time.perf_counter()


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage: a complete config, its directory and how it starts.

  Attributes:
    name: 'stage1' or 'stage2'.
    config: the full config the stage trains with.
    workdir: where its checkpoints, metrics and plots go.
    init_dir: workdir whose checkpoint initialises the stage (None: fresh).
    init_which: 'best' or 'latest' checkpoint of ``init_dir``.
    init_config: the config that wrote ``init_dir`` (its state structure).
    reinit_head: start the head from scratch (cRT) instead of ``init_dir``.
    trainable: regex of the parameter paths that train (None: all).
    train_bn: BatchNorm in train mode (batch statistics, running averages
      updated), as the official stage-2 code; False freezes it.
    max_norm: > 0: projected MaxNorm on head/kernel with this threshold.
    max_norm_per_epoch: project once per epoch instead of every step.
    feature_cache: 'auto' (train the head on features extracted once when that
      is exact), 'on' (an error when it is not) or 'off'.
  """
  name: str
  config: ml_collections.ConfigDict
  workdir: str
  init_dir: str | None = None
  init_which: str = 'best'
  init_config: ml_collections.ConfigDict | None = None
  reinit_head: bool = False
  trainable: str | None = None
  train_bn: bool = True
  max_norm: float = 0.0
  max_norm_per_epoch: bool = False
  feature_cache: str = 'off'


def stage2_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full config of stage 2: stage 1's, with ``config.stage2``'s settings in place."""
  s2 = config.stage2
  c = ml_collections.ConfigDict(config.to_dict())
  c.loss, c.optim, c.schedule = (ml_collections.ConfigDict(s2.loss.to_dict()),
                                 ml_collections.ConfigDict(s2.optim.to_dict()),
                                 ml_collections.ConfigDict(s2.schedule.to_dict()))
  c.num_epochs, c.num_train_steps = s2.num_epochs, -1
  c.eval_every_epochs = s2.eval_every_epochs
  c.batch_size = s2.batch_size or config.batch_size
  c.data.sampler, c.data.mixup_alpha = s2.sampler, s2.mixup_alpha
  c.data.augment = s2.augment or config.data.augment
  if s2.head not in ('keep', 'reinit'):
    c.model.head = s2.head
  c.stage2.num_epochs = 0
  c.sam.rho, c.sam.rho_values = 0.0, ()  # Stage 1's optimiser and flat loss only.
  c.cc_sam.flat_ratio = 0.0
  return c


def plan_stages(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
  """Stage 1, plus stage 2 when ``config.stage2.num_epochs > 0``."""
  stages = [Stage('stage1', config, workdir)]
  s2 = config.stage2
  if s2.num_epochs > 0:
    if s2.init_from not in ('best', 'latest'):
      raise ValueError(f"Unknown stage2.init_from {s2.init_from!r}; valid: ['best', 'latest'].")
    if s2.bn not in ('update', 'frozen'):
      raise ValueError(f"Unknown stage2.bn {s2.bn!r}; valid: ['update', 'frozen'].")
    if s2.feature_cache not in ('auto', 'on', 'off'):
      raise ValueError(f'Unknown stage2.feature_cache {s2.feature_cache!r}; valid: '
                       "['auto', 'on', 'off'].")
    stages.append(Stage(
        'stage2', stage2_config(config), os.path.join(workdir, 'stage2'), init_dir=workdir,
        init_which=s2.init_from, init_config=config,
        reinit_head=s2.head == 'reinit',
        trainable=s2.trainable or None, train_bn=s2.bn == 'update', max_norm=s2.max_norm,
        max_norm_per_epoch=s2.max_norm_per_epoch, feature_cache=s2.feature_cache))
  return stages


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       hooks: Iterable[Hook] = ()) -> tuple[TrainState, dict]:
  """Trains every stage of ``config`` under ``workdir`` (resuming if possible).

  Returns:
    The final state and the final test metrics of the last stage.
  """
  if '://' not in workdir:  # orbax needs absolute local paths; gs:// etc. are left alone.
    workdir = os.path.abspath(workdir)
  result = None
  for stage in plan_stages(config, workdir):
    result = run_stage(stage, hooks=hooks)
  return result


def _merge_params(fresh, source, *, skip_prefix: str | None = None):
  """``fresh`` with every leaf whose path and shape also exist in ``source`` taken from it."""
  source_leaves = {optim.path_str(path): leaf
                   for path, leaf in jax.tree_util.tree_leaves_with_path(source)}

  def pick(path, leaf):
    name = optim.path_str(path)
    other = source_leaves.get(name)
    if other is None or other.shape != leaf.shape or (
        skip_prefix and name.startswith(skip_prefix)):
      return leaf
    return other

  return jax.tree_util.tree_map_with_path(pick, fresh)


def _load_source(stage: Stage, *, num_classes: int, input_shape, mesh) -> TrainState:
  """The state saved in ``stage.init_dir`` (its best or latest checkpoint)."""
  source_config = stage.init_config
  source_model = models.build_model(source_config.model, num_classes,
                                    dtype=DTYPES[source_config.dtype])
  # The optimiser state's structure must match the saved one: rebuild stage 1's chain.
  source_tx = optim.build_optimizer(source_config.optim, lambda count: 0.0)
  abstract = create_train_state(source_model, source_tx, input_shape=input_shape,
                                seed=source_config.seed, mesh=mesh)
  checkpoints = Checkpoints(stage.init_dir)
  try:
    source = checkpoints.restore(abstract, which=stage.init_which)
  finally:
    checkpoints.close()
  if source is None:
    raise FileNotFoundError(f'{stage.name} starts from the {stage.init_which} checkpoint of '
                            f'{stage.init_dir}, which has none; train stage 1 first.')
  logging.info('%s: initialised from %s (%s checkpoint, step %d).', stage.name,
               stage.init_dir, stage.init_which, int(source.step))
  return source


def _paths(tree) -> list[tuple[str, object]]:
  return [(optim.path_str(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]


def _feature_cache(stage: Stage, state: TrainState, mesh, *, head_only: bool, train_set,
                   eval_splits: dict) -> feature_cache.FeatureCache | None:
  """The stage's feature cache when ``stage.feature_cache`` asks for one and it is exact."""
  if stage.feature_cache == 'off':
    return None
  config = stage.config
  reasons = feature_cache.unavailable_reasons(
      head_only=head_only, train_bn=stage.train_bn, augment=config.data.augment,
      mixup_alpha=config.data.mixup_alpha, eval_image_size=config.eval.image_size)
  if stage.feature_cache == 'on' and reasons == [feature_cache.RESIZED_FOR_EVAL]:
    logging.warning('%s: %s; training the head on them as stage2.feature_cache=\'on\' asks.',
                    stage.name, feature_cache.RESIZED_FOR_EVAL)
    reasons = []
  if reasons:
    message = 'the feature cache would not be exact: ' + '; '.join(reasons)
    if stage.feature_cache == 'on':
      raise ValueError(f'{stage.name}: stage2.feature_cache=\'on\' but {message}.')
    logging.info('%s: training through the backbone, since %s.', stage.name, message)
    return None
  start = time.perf_counter()
  cache = feature_cache.FeatureCache(
      state, mesh, train_set=train_set, eval_sets=eval_splits,
      batch_size=config.eval_batch_size,
      image_size=config.eval.image_size if config.eval.image_size > 0 else None,
      flip_tta=config.eval.flip_tta)
  logging.info('%s: feature cache of %d training images (dimension %d) built in %.1f s; '
               'the head trains on it.', stage.name, len(cache.train_labels),
               cache.feature_dim, time.perf_counter() - start)
  return cache


def _sam_rho(sam_config: ml_collections.ConfigDict, steps_per_epoch: int):
  """SAM's radius: a constant, or piecewise constant over epochs (Saddle's ImageNet/iNat)."""
  if not sam_config.rho_values:
    return sam_config.rho
  if len(sam_config.rho_values) != len(sam_config.rho_boundaries) + 1:
    raise ValueError(f'sam.rho_values needs len(sam.rho_boundaries) + 1 = '
                     f'{len(sam_config.rho_boundaries) + 1} values, got '
                     f'{len(sam_config.rho_values)}.')
  return optim.step_rho_schedule(sam_config.rho_boundaries, sam_config.rho_values,
                                 steps_per_epoch)


def run_stage(stage: Stage, *, hooks: Iterable[Hook] = ()) -> tuple[TrainState, dict]:
  """Trains one stage in ``stage.workdir`` (resuming if possible) and evaluates it."""
  config, workdir = stage.config, stage.workdir
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    save_config(config, workdir)  # launch/eval.py rebuilds the data and model from it.
  if config.dtype not in DTYPES:
    raise ValueError(f'Unknown config.dtype {config.dtype!r}; valid: {sorted(DTYPES)}.')
  check_batch_size(config.batch_size, 'batch_size')
  check_batch_size(config.eval_batch_size, 'eval_batch_size')

  # Data.
  skip_log_dir = os.path.join(workdir, 'skipped_images')
  splits = data.load_datasets(config.data, skip_log_dir=skip_log_dir)
  train_set, train_counts = splits.train, splits.train_counts
  batches = data.TrainBatches(
      train_set, global_batch_size=config.batch_size, seed=config.seed,
      sampler=config.data.sampler, augment=config.data.augment,
      crop_padding=config.data.crop_padding, image_size=config.data.image_size,
      mixup_alpha=config.data.mixup_alpha,
      process_index=jax.process_index(), process_count=jax.process_count())
  steps_per_epoch = batches.steps_per_epoch
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  logging.info('Train set: %d images, class counts %s; validation: %s; test: %d images.',
               len(train_set), train_counts.tolist(),
               len(splits.val) if splits.val is not None else 'none', len(splits.test))

  # Model, optimiser, state.
  mesh = sharding.make_mesh()
  schedule = optim.build_schedule(config.schedule, base_lr=config.optim.lr,
                                  steps_per_epoch=steps_per_epoch,
                                  num_epochs=config.num_epochs)
  tx = optim.build_optimizer(config.optim, schedule)
  source = None
  if stage.init_dir is not None:
    source = _load_source(stage, num_classes=train_set.num_classes,
                          input_shape=batches.image_shape(), mesh=mesh)
  if stage.max_norm > 0:
    # Per-class thresholds from the stage-1 classifier (weight balancing, reference §2.3).
    every = steps_per_epoch if stage.max_norm_per_epoch else 1
    tx = optax.chain(tx, optim.projected_max_norm(
        optim.head_max_norm(source.params, thresh=stage.max_norm), every_n_steps=every))
  if stage.trainable is not None:
    tx = optim.freeze(tx, stage.trainable)
  use_sam = bool(config.sam.rho > 0 or config.sam.rho_values)
  if use_sam:  # Outermost: SAM must see the raw gradient tree.
    tx = optim.sam(tx, rho=_sam_rho(config.sam, steps_per_epoch), adaptive=config.sam.adaptive,
                   perturb_mask=functools.partial(optim.path_mask, regex=config.sam.perturb))
  if config.cc_sam.flat_ratio > 0 and config.model.head != 'linear':
    raise ValueError("cc_sam perturbs a linear classifier; set model.head='linear' (got "
                     f'{config.model.head!r}).')
  objective = losses.build_objective(config.loss, train_counts,
                                     steps_per_epoch=steps_per_epoch,
                                     num_epochs=config.num_epochs,
                                     cc_sam_config=config.cc_sam)
  model = models.build_model(config.model, train_set.num_classes,
                             dtype=DTYPES[config.dtype])
  state = create_train_state(model, tx, input_shape=batches.image_shape(),
                             seed=config.seed, mesh=mesh)
  # The best checkpoint is chosen on the validation split when there is one;
  # without one, on the test split, as the official code of every paper does.
  select_split = 'val' if splits.val is not None else 'test'
  checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
  restored = checkpoints.restore(state)
  if restored is not None:
    state = restored
    logging.info('Resumed from %s/checkpoints at step %d.', workdir, int(state.step))
  elif source is not None:
    state = state.replace(
        params=_merge_params(state.params, source.params,
                             skip_prefix='head/' if stage.reinit_head else None),
        batch_stats=_merge_params(state.batch_stats, source.batch_stats))
  start_step = int(state.step)

  # Only head parameters train: no gradient needs to reach the backbone.
  head_only = stage.trainable is not None and all(
      name.startswith('head/') for name, trains in _paths(optim.path_mask(
          state.params, stage.trainable)) if trains)
  train_step = make_train_step(state, mesh, objective=objective, train_bn=stage.train_bn,
                               sam=use_sam, head_only=head_only)
  writer = MetricWriter(workdir)
  eval_splits = {'test': splits.test}
  if splits.val is not None:
    eval_splits['val'] = splits.val
  cache = _feature_cache(stage, state, mesh, head_only=head_only, train_set=train_set,
                         eval_splits=eval_splits)
  if cache is not None:
    eval_on = functools.partial(cache.evaluate, train_counts=train_counts,
                                eval_config=config.eval)
  else:
    eval_images = functools.partial(
        evaluate, eval_step=make_eval_step(state, mesh, flip_tta=config.eval.flip_tta),
        mesh=mesh, batch_size=config.eval_batch_size, train_counts=train_counts,
        eval_config=config.eval)
    eval_on = lambda state, split: eval_images(state, dataset=eval_splits[split])

  def run_eval(state, step):
    """Evaluates every split, writes its rows; returns {split: metrics}."""
    out = {}
    for name in eval_splits:
      out[name] = eval_on(state, name)
      writer.write(step=step, epoch=step / steps_per_epoch, split=name, **out[name])
    return out

  train_log = _TrainLog(writer, schedule, steps_per_epoch, workdir, checkpoints)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                       disable=not config.progress_bar or jax.process_index() != 0,
                       dynamic_ncols=True, file=sys.stdout)
  results = None
  try:
    if cache is not None:
      device_batches = cache.train_batches(batches, start_step, total_steps - start_step)
    else:
      device_batches = sharding.prefetch_to_device(
          batches.iterate(start_step, total_steps - start_step,
                          num_threads=config.data.read_threads,
                          num_workers=config.data.num_workers), mesh)
    for step, batch in zip(range(start_step, total_steps), device_batches):
      state, metrics = train_step(state, batch)
      train_log.add(step, metrics, config.batch_size)
      done = step + 1
      progress.update(1)
      epoch_end = done % steps_per_epoch == 0
      do_eval = done == total_steps or (
          epoch_end and (done // steps_per_epoch) % config.eval_every_epochs == 0)
      do_checkpoint = do_eval or (config.checkpoint_every_steps > 0 and
                                  done % config.checkpoint_every_steps == 0)
      if done % config.log_every_steps == 0 or do_checkpoint:
        row = train_log.flush()
        progress.set_postfix(loss=f'{row["loss"]:.4f}',
                             img_per_s=f'{row["images_per_second"]:.0f}')
      if do_eval:
        all_results = run_eval(state, done)
        results = all_results['test']
        progress.write(f'step {done} epoch {done / steps_per_epoch:.1f}: test '
                       f'accuracy {100 * results["accuracy"]:.2f} balanced '
                       f'{100 * results["balanced_accuracy"]:.2f} many '
                       f'{100 * results["many"]:.2f} medium {100 * results["medium"]:.2f} '
                       f'few {100 * results["few"]:.2f}')
      if do_checkpoint:
        score = all_results[select_split]['balanced_accuracy'] if do_eval else None
        checkpoints.save(state, selection_score=score)
        train_log.restart_clock()
      for hook in hooks:
        hook(done, state)
  finally:
    progress.close()
    checkpoints.wait()
    checkpoints.close()
    writer.close()

  skipped = set()
  for split in (splits.train, splits.val, splits.test):
    if hasattr(split, 'skipped'):
      skipped |= split.skipped()
  if skipped:
    logging.warning('%d unreadable images were skipped (data.skip_corrupt); they are '
                    'listed in %s.', len(skipped), skip_log_dir)
  if results is None:  # Nothing left to train: the run was already complete.
    results = eval_on(state, 'test')
  if jax.process_index() == 0:
    plots.plot_per_class_accuracy(
        results['per_class_accuracy'], train_counts,
        os.path.join(workdir, 'per_class_accuracy.png'),
        class_names=train_set.class_names,
        title=f'{config.data.name} (imbalance ratio {config.data.imbalance_ratio})')
    print(ltjax_eval.format_table(results, title=f'Test results of {stage.name} at step '
                                                 f'{int(state.step)} ({workdir}):'))
    print(ltjax_eval.metrics.format_per_class(results['per_class_accuracy'], train_counts,
                                              train_set.class_names))
  return state, results
