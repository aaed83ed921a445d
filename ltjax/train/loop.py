"""The training loop: config -> data -> jitted steps -> metrics, checkpoints, plots.

``train_and_evaluate(config, workdir)`` is what ``launch/train.py`` and the
notebooks call. It plans the stages (``ltjax.train.stages``: stage 1 in
``workdir`` and, when ``config.stage2.num_epochs > 0``, classifier
re-training in ``workdir/stage2``) and runs each with ``run_stage``, whose
steps are named functions below: load the data, build the state (optimiser,
model, resume or initialise from the source stage), the evaluator, the train
loop, the final report. Each stage resumes from the newest checkpoint in its
directory if there is one; since the data order and the step randomness are
functions of the step, a resumed run ends with the same parameters as an
uninterrupted one.

Host syncs happen only at log, eval and checkpoint time: per-step metrics stay
on device until then. Non-finite losses are detected at those points, before
any checkpoint is written, so the last good checkpoint always survives.
"""

import dataclasses
import datetime
import functools
import sys
import time
from typing import Callable, Iterable, Iterator

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
import tqdm

from ltjax import files
from ltjax import data
from ltjax.data import dali_decode
from ltjax import models
from ltjax import optim
from ltjax.eval import metrics as eval_metrics
from ltjax.eval import plots
from ltjax.train import config_check
from ltjax.train import feature_cache
from ltjax.train import final_adjustment
from ltjax.train import predict
from ltjax.train import preflight
from ltjax.train import resume_check
from ltjax.train import results as run_results
from ltjax.train import sharding
from ltjax.train import stages
from ltjax.train import stopping
from ltjax.train import wall_time
from ltjax.train.checkpoint import Checkpoints
from ltjax.train.checkpoint import save_config
from ltjax.train.stages import Stage
from ltjax.train.state import TrainState
from ltjax.train.state import create_train_state
from ltjax.train.steps import make_eval_step
from ltjax.train.steps import make_train_step
from ltjax.train import workdir_lock
from ltjax.train.writer import MetricWriter

Hook = Callable[[int, TrainState], None]  # Called after every step with (step, state).
# split name -> metrics of the state on it (ltjax.eval.metrics.classification_metrics).
Evaluator = Callable[[TrainState, str], dict]


class _TrainLog:
  """Keeps per-step metrics on device until log time; checks them for NaN/inf."""

  def __init__(
      self,
      writer: MetricWriter,
      schedule,
      steps_per_epoch: int,
      workdir: str,
      checkpoints: Checkpoints,
  ):
    self.writer = writer
    self.schedule = schedule
    self.steps_per_epoch = steps_per_epoch
    self.workdir = workdir
    self.checkpoints = checkpoints
    self.pending: list[tuple[int, dict]] = []
    self.last_time = time.perf_counter()
    self.images = 0
    self.input_wait = 0.0

  def add(self, step: int, metrics: dict, batch_size: int, input_wait: float) -> None:
    """One step's metrics; ``input_wait``: seconds the loop waited for its batch."""
    self.pending.append((step, metrics))
    self.images += batch_size
    self.input_wait += input_wait

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
            'NaN, or train in float32 (config.dtype).'
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    now = time.perf_counter()
    elapsed = max(now - self.last_time, 1e-9)
    mean['images_per_second'] = self.images / elapsed
    mean['steps_per_second'] = len(steps) / elapsed
    # The share of the interval the loop spent waiting for its next batch: an input-bound
    # run shows a large one (the device idles while the host decodes).
    mean['input_wait_fraction'] = min(self.input_wait / elapsed, 1.0)
    memory = device_memory_bytes()
    if memory is not None:
      mean['device_memory_gib'] = memory / 2**30
    mean['learning_rate'] = float(self.schedule(steps[-1]))
    step = steps[-1] + 1
    self.writer.write(step=step, epoch=step / self.steps_per_epoch, split='train', **mean)
    self.pending, self.images, self.input_wait, self.last_time = [], 0, 0.0, now
    return mean

  def restart_clock(self) -> None:
    """Excludes evaluation and checkpoint time from the next throughput."""
    self.last_time = time.perf_counter()
    self.input_wait = 0.0


def device_memory_bytes() -> int | None:
  """Bytes in use on this process's first device (None where the backend does not say: CPU)."""
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else stats.get('bytes_in_use')


def log_line(done: int, total: int, steps_per_epoch: int, row: dict) -> str:
  """One batch-log line: progress, loss, throughput, input wait, device memory and ETA."""
  eta = (total - done) / max(row['steps_per_second'], 1e-9)
  memory = row.get('device_memory_gib')
  return ' '.join(
      [
          f'step {done}/{total} (epoch {done / steps_per_epoch:.2f}):',
          f'loss {row["loss"]:.4f},',
          f'{row["images_per_second"]:.0f} images/s,',
          f'input wait {100 * row["input_wait_fraction"]:.0f}%,',
          *([f'device memory {memory:.2f} GiB,'] if memory is not None else []),
          f'ETA {datetime.timedelta(seconds=round(eta))}',
      ]
  )


class _Profile:
  """A profiler trace of steps [first, last] (config.profile_steps) in <workdir>/profile."""

  def __init__(self, steps, workdir: str):
    self.first, self.last = (int(s) for s in steps) if steps else (-1, -1)
    self.dir = files.join(workdir, 'profile')
    self.active = False

  def before(self, step: int) -> None:
    if step == self.first:
      jax.profiler.start_trace(self.dir)
      self.active = True

  def after(self, step: int, state) -> None:
    if self.active and step >= self.last:
      jax.block_until_ready(state)  # The traced steps' device work, not just their dispatch.
      jax.profiler.stop_trace()
      self.active = False
      logging.info('Profile of steps %d-%d written to %s.', self.first, self.last, self.dir)

  def close(self) -> None:
    if self.active:
      jax.profiler.stop_trace()
      self.active = False


@dataclasses.dataclass(frozen=True)
class StageData:
  """What a stage trains and evaluates on."""

  splits: data.Splits
  batches: data.TrainBatches
  eval_splits: dict  # 'test' (and 'val') -> dataset.
  total_steps: int
  skip_log_dir: str

  @property
  def steps_per_epoch(self) -> int:
    return self.batches.steps_per_epoch

  @property
  def train_counts(self) -> np.ndarray:
    return self.splits.train_counts


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    hooks: Iterable[Hook] = (),
    resume_allow: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
  """Trains every stage of ``config`` under ``workdir`` (resuming if possible).

  Everything that can be checked is checked before the first step, for every
  stage: names, sizes and intervals (``plan_stages``); that a resumed workdir
  holds a run of this config (``resume_check``; ``resume_allow`` names keys
  changed on purpose); the workdir's lock (``workdir_lock``); the data of every
  stage, its evaluation images, and each stage's training step traced with
  the real model (``preflight_stage``).

  Returns:
    The final state and the final test metrics of the last stage.
  Raises:
    stopping.Stopped: a signal or a preemption stopped training (checkpoint saved).
  """
  if not workdir:
    raise ValueError('--workdir is empty: name the directory the run writes to.')
  workdir = files.absolute(workdir)  # orbax needs absolute local paths; URLs stay URLs.
  planned = stages.plan_stages(config, workdir)
  for stage in planned:  # Read-only: nothing is written before every stage passes.
    resume_check.check_resume(
        stage.config, stage.workdir, stage1=stage.name == stages.STAGE1, allow=resume_allow
    )
  # One stop handler for the whole command: a SIGTERM while the data load, between the
  # stages or during an evaluation is seen at the next check, never lost (ltjax.train.stopping).
  with stopping.handling(), workdir_lock.workdir_lock(workdir):
    stage_data = {}
    for stage in planned:
      stage_data[stage.name] = load_data(stage.config, stage.workdir)
      stopping.check(f'while the data of {stage.name} loaded, before it trained')
      preflight_stage(stage, stage_data[stage.name], first=stage is planned[0])
    result = None
    for stage in planned:
      stopping.check(f'before {stage.name} started')
      result = run_stage(
          stage, hooks=hooks, stage_data=stage_data.pop(stage.name), resume_allow=resume_allow
      )
    stopping.check('after the last stage, before results.json was written')
    check_lock(workdir)
    run_results.write_run(workdir, {stage.name: stage.workdir for stage in planned})
  return result


def preflight_stage(stage: Stage, stage_data: StageData, *, first: bool) -> None:
  """The checks of a stage that need its data: before any stage trains.

  The validation split a post-hoc adjustment needs; every evaluation image
  readable (``data.verify_eval_images``; a corrupt test image would otherwise
  stop the run at its first evaluation), once; the trainable regex against the
  real model's parameters; and for the stages after the first, their training
  step traced with the real model, so shape, head and loss errors of stage 2
  come before stage 1 trains (the first stage's step is traced moments later,
  when it compiles, before any training).
  """
  config = stage.config
  final_adjustment.check_validation_split(config, 'val' in stage_data.eval_splits)
  # eval.group_sizes against the class count, before training rather than at its first evaluation.
  eval_metrics.class_groups(stage_data.train_counts, **eval_metrics.group_options(config.eval))
  if first and config.data.verify_eval_images:
    splits = dict(stage_data.eval_splits)
    if stage_data.splits.open_test is not None:
      splits['open_test'] = stage_data.splits.open_test
    for name, split in splits.items():
      data.check_readable(split, name, skip_corrupt=config.data.skip_corrupt)
  try:
    preflight.trace_train_step(
        stage,
        train_counts=stage_data.train_counts,
        image_shape=stage_data.batches.image_shape(),
        steps_per_epoch=stage_data.steps_per_epoch,
        step=not first,
    )
  except (ValueError, TypeError) as e:
    if stage.name == stages.STAGE1:
      if isinstance(e, ValueError):
        raise
      raise ValueError(f'The config cannot train (its training step fails to trace): {e}') from e
    raise ValueError(
        f'Stage 2 (the config.stage2.* settings) cannot train, so nothing was started: {e}'
    ) from e


def run_stage(
    stage: Stage,
    *,
    hooks: Iterable[Hook] = (),
    stage_data: StageData | None = None,
    resume_allow: tuple[str, ...] = (),
) -> tuple[TrainState, dict]:
  """Trains one stage in ``stage.workdir`` (resuming if possible) and evaluates it.

  ``stage_data``: the stage's data when already loaded. Ends by writing the
  stage's ``stage_results.json`` (``ltjax.train.results``).
  """
  start_time = time.perf_counter()
  config = stage.config
  config_check.check_names(config)  # Also when a stage is run without plan_stages.
  config_check.check_values(config)
  changed = resume_check.check_resume(
      config, stage.workdir, stage1=stage.name == stages.STAGE1, allow=resume_allow
  )
  if stage_data is None:
    stage_data = load_data(config, stage.workdir)
  final_adjustment.check_validation_split(config, 'val' in stage_data.eval_splits)
  objective, schedule = stages.objective_and_schedule(
      stage, train_counts=stage_data.train_counts, steps_per_epoch=stage_data.steps_per_epoch
  )
  mesh = sharding.make_mesh()
  source = load_source(stage, stage_data, mesh)
  source_record = stages.source_record(stage, source) if source is not None else None
  if source_record is not None:
    # A stage trained from another version of its source (stage 1 retrained since, e.g. with
    # more epochs) is redone from the new one; its old directory is kept beside it.
    why = stages.source_changed(stage, source_record)
    if why is not None:
      if jax.process_index() == 0:
        kept = stages.set_aside(stage.workdir)
        print(f'{why}: {stage.name} is trained again from it; the earlier one is kept in {kept}.')
      multihost_sync('set_aside')
      changed = {}  # A fresh stage: nothing is resumed.
  tx = stages.optimizer(
      stage,
      schedule,
      steps_per_epoch=stage_data.steps_per_epoch,
      initial_params=source['params'] if source is not None else None,
  )
  checkpoints = Checkpoints(stage.workdir, keep=config.keep_checkpoints)
  try:
    state = initial_state(stage, stage_data, tx, source, checkpoints, mesh, changed=changed)
    resumed = int(state.step) > 0
    wall = wall_time.StageWallTime(stage.workdir, int(state.step), started=start_time)
    # The config is recorded only now, with the stage's checkpoint read into its state: a
    # change the checkpoint cannot hold fails before anything is written.
    record_config(stage, changed, source_record=None if resumed else source_record)
    head_only = stages.trains_head_only(stage, state.params)
    cache = feature_cache.for_stage(
        stage,
        state,
        mesh,
        head_only=head_only,
        train_set=stage_data.splits.train,
        eval_splits=stage_data.eval_splits,
    )
    evaluator = make_evaluator(config, state, mesh, stage_data, cache)
    train_step = make_train_step(
        state,
        mesh,
        objective=objective,
        train_bn=stage.train_bn,
        sam=optim.uses_sam(config),
        sam_batch_norm=config.sam.batch_norm_statistics,
        head_only=head_only,
        input_stats=input_stats(stage_data),
    )
    state, results = train(
        stage,
        state,
        stage_data,
        train_step,
        schedule=schedule,
        checkpoints=checkpoints,
        wall=wall,
        evaluator=evaluator,
        batches=device_batches(config, stage_data, cache, int(state.step), mesh),
        hooks=hooks,
    )
  finally:
    checkpoints.wait()
    checkpoints.close()
  if results is None:  # Nothing left to train: the run was already complete.
    results = evaluator(state, 'test')
  report(stage, state, stage_data, results)
  posthoc = None
  if config.posthoc.method != 'none' and config.stage2.num_epochs <= 0:  # The final model.
    posthoc = adjust(stage, state, stage_data, mesh, results)
    results = {**results, 'posthoc': posthoc}
  check_lock(stage.workdir)
  run_results.write_json(
      files.join(stage.workdir, run_results.STAGE_FILENAME),
      run_results.stage_record(
          stage=stage.name,
          step=int(state.step),
          test=results,
          posthoc=posthoc,
          train_counts=stage_data.train_counts,
          wall_seconds=wall.seconds(),
          wall_seconds_complete=wall.complete,
          resumed=resumed,
          workdir=stage.workdir,
      ),
  )
  return state, results


def record_config(stage: Stage, changed: dict, *, source_record: dict | None) -> None:
  """Writes the stage's config.json (an allowed change keeps the earlier one) and, for a
  stage starting from its source, source.json (process 0)."""
  if jax.process_index() != 0:
    return
  files.makedirs(stage.workdir)
  if changed:  # Allowed changes: the earlier config is kept beside the new one.
    kept = resume_check.keep_recorded_config(stage.workdir)
    print(f'Resuming {stage.workdir} with changed {sorted(changed)}; the earlier config is {kept}.')
  save_config(stage.config, stage.workdir)  # launch/eval.py rebuilds the data and model from it.
  if source_record is not None:
    files.write_json(files.join(stage.workdir, stages.SOURCE_FILE), source_record, indent=1)


def check_lock(workdir: str) -> None:
  """Before a save: raises ``WorkdirLostError`` on every process if the workdir's lock was lost.

  Only process 0 holds the lock; its answer is shared, so no host is left
  waiting in the save's barrier while another stops.
  """
  error = None
  try:
    workdir_lock.check_held()
  except workdir_lock.WorkdirLostError as e:
    error = e
  if stopping.any_process(error is not None):
    raise error or workdir_lock.WorkdirLostError(
        f"{workdir}: process 0 lost the workdir's lock; this process stops with it.",
        workdir=workdir,
    )


def multihost_sync(name: str) -> None:
  """Every process waits here until all have arrived (nothing on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def input_stats(stage_data: StageData) -> tuple | None:
  """(mean, std) for a train step that normalises device-augmented batches, else None."""
  if not stage_data.batches.device_augment:
    return None
  return stage_data.splits.train.mean, stage_data.splits.train.std


def load_data(config: ml_collections.ConfigDict, workdir: str) -> StageData:
  """The stage's splits and its deterministic training batches."""
  skip_log_dir = files.join(workdir, 'skipped_images')
  splits = data.load_datasets(config.data, skip_log_dir=skip_log_dir)
  batches = data.TrainBatches(
      splits.train,
      global_batch_size=config.batch_size,
      seed=config.seed,
      sampler=config.data.sampler,
      augment=config.data.augment,
      crop_padding=config.data.crop_padding,
      image_size=config.data.image_size,
      mixup_alpha=config.data.mixup_alpha,
      device_augment=config.data.device_augment,
      decoder=config.data.decoder,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  total_steps = (
      config.num_train_steps
      if config.num_train_steps > 0
      else config.num_epochs * batches.steps_per_epoch
  )
  eval_splits = {'test': splits.test}
  if splits.val is not None:
    eval_splits['val'] = splits.val
  logging.info(
      'Train set: %d images, class counts %s; validation: %s; test: %d images.',
      len(splits.train),
      splits.train_counts.tolist(),
      len(splits.val) if splits.val is not None else 'none',
      len(splits.test),
  )
  return StageData(
      splits=splits,
      batches=batches,
      eval_splits=eval_splits,
      total_steps=total_steps,
      skip_log_dir=skip_log_dir,
  )


def load_source(stage: Stage, stage_data: StageData, mesh) -> dict | None:
  """Parameters and BatchNorm statistics of the stage the stage starts from (None: fresh)."""
  if stage.source is None:
    return None
  return stages.load_source(
      stage,
      num_classes=stage_data.splits.train.num_classes,
      input_shape=stage_data.batches.image_shape(),
      sharding=sharding.replicated(mesh),
  )


def initial_state(
    stage: Stage,
    stage_data: StageData,
    tx: optax.GradientTransformation,
    source: dict | None,
    checkpoints: Checkpoints,
    mesh,
    *,
    changed: dict | None = None,
) -> TrainState:
  """The stage's state: resumed from its own checkpoint, else from its source, else fresh.

  A fresh state (stage 1, no checkpoint yet) with ``config.model.pretrained``
  set starts from those torchvision weights (``ltjax.models.pretrained``).
  ``changed``: the keys allowed to differ from the recorded config; a checkpoint
  that cannot hold this config's state then fails here, naming them.
  """
  config = stage.config
  model = models.build_model(
      config.model, stage_data.splits.train.num_classes, dtype=models.DTYPES[config.dtype]
  )
  state = create_train_state(
      model, tx, input_shape=stage_data.batches.image_shape(), seed=config.seed, mesh=mesh
  )
  resume_check.check_checkpoint_structure(stage.workdir, state, changed or {})
  restored = checkpoints.restore(state)
  if restored is not None:
    logging.info('Resumed from %s/checkpoints at step %d.', stage.workdir, int(restored.step))
    return restored
  if source is not None:
    state = state.replace(
        params=stages.merge_params(
            state.params, source['params'], skip_prefix='head/' if stage.reinit_head else None
        ),
        batch_stats=stages.merge_params(state.batch_stats, source['batch_stats']),
    )
  elif config.model.pretrained:
    params, batch_stats, _ = models.load_pretrained(
        config.model.pretrained,
        state.params,
        state.batch_stats,
        model_name=config.model.name,
        head=config.model.pretrained_head,
    )
    state = state.replace(params=params, batch_stats=batch_stats)
  return state


def make_evaluator(
    config: ml_collections.ConfigDict,
    state: TrainState,
    mesh,
    stage_data: StageData,
    cache: feature_cache.FeatureCache | None,
) -> Evaluator:
  """Metrics of a state on a split: on the cached features, or through the whole model.

  With ``eval.flip_tta`` and ``eval.select_single_view`` every split's metrics
  also hold the single-view balanced accuracy (``selection_score``).
  """
  evaluate = functools.partial(
      predict.evaluate, mesh=mesh, train_counts=stage_data.train_counts, eval_config=config.eval
  )
  single_view = selects_single_view(config.eval)
  if cache is not None:
    head_step = predict.with_single_view_head(cache.head_step) if single_view else cache.head_step
    return lambda state, split: evaluate(state, head_step, cache.eval_batches(split))
  eval_step = make_eval_step(state, mesh, flip_tta=config.eval.flip_tta, single_view=single_view)
  image_size = config.eval.image_size if config.eval.image_size > 0 else None
  return lambda state, split: evaluate(
      state,
      eval_step,
      predict.image_batches(
          stage_data.eval_splits[split], batch_size=config.eval_batch_size, image_size=image_size
      ),
  )


def selects_single_view(eval_config: ml_collections.ConfigDict) -> bool:
  """Whether the best checkpoint is chosen on single-view accuracy (needs flip-TTA to differ)."""
  return bool(eval_config.flip_tta and eval_config.get('select_single_view', False))


def selection_score(split_metrics: dict, eval_config: ml_collections.ConfigDict) -> float:
  """The number the best checkpoint is chosen on, from the selection split's metrics.

  Its balanced accuracy; with ``eval.flip_tta`` and ``eval.select_single_view``,
  that of the unflipped images while the reported metrics stay flip-averaged:
  the weight-balancing demo keeps the epoch of the best single-view test
  accuracy and reports the flip-averaged accuracy of that epoch's model.
  """
  if selects_single_view(eval_config):
    return split_metrics[predict.SINGLE_VIEW_BALANCED_ACCURACY]
  return split_metrics['balanced_accuracy']


def train(
    stage: Stage,
    state: TrainState,
    stage_data: StageData,
    train_step,
    *,
    schedule,
    checkpoints: Checkpoints,
    wall: wall_time.StageWallTime,
    evaluator: Evaluator,
    batches: Iterator[dict[str, jax.Array]],
    hooks: Iterable[Hook],
) -> tuple[TrainState, dict | None]:
  """The step loop: train, log, evaluate and checkpoint; the last test metrics (or None)."""
  config, workdir = stage.config, stage.workdir
  steps_per_epoch, total_steps = stage_data.steps_per_epoch, stage_data.total_steps
  start_step = int(state.step)
  # The best checkpoint is chosen on the validation split when there is one;
  # without one, on the test split, as the official code of every paper does.
  select_split = 'val' if 'val' in stage_data.eval_splits else 'test'
  writer = MetricWriter(workdir, resume_step=start_step)
  writer.write_hparams(config_check.flatten(config))

  evaluations = Evaluations(workdir, resumed=start_step > 0)

  def evaluate(state, step):
    """Evaluates every split at ``step``, writes the rows, offers the state to best/.

    Returns the test metrics. A stop request abandons it between batches: the
    checkpoint of ``step`` was saved before, and the evaluation is redone on
    resume (it is recorded as complete only at the end).
    """
    out = {}
    try:
      for name in stage_data.eval_splits:
        out[name] = evaluator(state, name)
        writer.write(step=step, epoch=step / steps_per_epoch, split=name, **out[name])
    except stopping.Interrupted as e:
      checkpoints.wait()
      raise stopping.Stopped(
          f'Stopped during the evaluation of step {step}: {e} The checkpoint of that step is '
          f'saved in {workdir}/checkpoints; rerun the same command to resume.',
          step,
      ) from e
    progress.write(eval_line(step, steps_per_epoch, out['test']))
    check_lock(workdir)
    checkpoints.save_best(state, selection_score(out[select_split], config.eval))
    checkpoints.wait()  # Recorded as complete once its best/ offer is on disk.
    evaluations.add(step)
    return out['test']

  train_log = _TrainLog(writer, schedule, steps_per_epoch, workdir, checkpoints)
  clock = stopping.SaveClock(config.checkpoint_every_minutes)
  main_process = jax.process_index() == 0
  # A bar on a terminal; a batch job's log gets one line per log interval instead.
  bar = config.progress_bar and main_process and sys.stdout.isatty()
  lines = config.progress_bar and main_process and not bar
  progress = tqdm.tqdm(
      total=total_steps,
      initial=start_step,
      unit='step',
      disable=not bar,
      dynamic_ncols=True,
      file=sys.stdout,
  )
  profile = _Profile(config.profile_steps, workdir)
  batches = iter(batches)
  results = None
  try:
    with stopping.handling() as stops:
      # A run killed (or stopped) during the evaluation of its checkpoint's step resumes
      # with that evaluation: its metrics rows, its best/ offer and, for the last step,
      # the stage's result would otherwise be lost.
      if is_eval_step(start_step, config, steps_per_epoch, total_steps) and (
          start_step not in evaluations
      ):
        logging.info('Evaluating step %d, whose evaluation did not complete.', start_step)
        results = evaluate(state, start_step)
        stops.check(f'after the evaluation of step {start_step}')
      for step in range(start_step, total_steps):
        waited = time.perf_counter()
        batch = next(batches, None)
        if batch is None:
          break
        waited = time.perf_counter() - waited
        profile.before(step)
        state, metrics = train_step(state, batch)
        train_log.add(step, metrics, config.batch_size, waited)
        done = step + 1
        profile.after(done - 1, state)
        progress.update(1)
        log_step = done % config.log_every_steps == 0
        stop = stops.requested(done, sync=log_step)
        do_eval = is_eval_step(done, config, steps_per_epoch, total_steps)
        do_checkpoint = (
            do_eval
            or stop is not None
            or (config.checkpoint_every_steps > 0 and done % config.checkpoint_every_steps == 0)
            or (log_step and clock.due())
        )
        if log_step or do_checkpoint:
          row = train_log.flush()  # Raises on a non-finite loss before anything is saved.
          progress.set_postfix(
              loss=f'{row["loss"]:.4f}', img_per_s=f'{row["images_per_second"]:.0f}'
          )
          if lines and log_step:
            print(log_line(done, total_steps, steps_per_epoch, row), flush=True)
        if do_checkpoint:  # Saved before evaluating: a failed evaluation costs no training.
          check_lock(workdir)
          checkpoints.save(state)
          wall.saved(done)
          clock.saved()
        if stop is not None:
          checkpoints.wait()
          raise stopping.Stopped(
              f'Stopped at step {done} ({stop}); the checkpoint of that step is saved in '
              f'{workdir}/checkpoints. Rerun the same command to resume.',
              done,
          )
        if do_eval:
          results = evaluate(state, done)
          stops.check(f'after the evaluation of step {done}')
        if do_checkpoint:
          train_log.restart_clock()
        for hook in hooks:
          hook(done, state)
  finally:
    profile.close()
    progress.close()
    writer.close()
  return state, results


def device_batches(
    config: ml_collections.ConfigDict,
    stage_data: StageData,
    cache: feature_cache.FeatureCache | None,
    start_step: int,
    mesh,
):
  """Global device batches of the steps from ``start_step`` on: cached features or images."""
  num_steps = stage_data.total_steps - start_step
  if cache is not None:
    return cache.train_batches(stage_data.batches, start_step, num_steps)
  local_batches = stage_data.batches.iterate(
      start_step,
      num_steps,
      num_threads=config.data.read_threads,
      num_workers=config.data.num_workers,
  )
  if stage_data.batches.decoder == 'dali':  # Decoded here: a DALI pipeline does not pickle.
    decode = dali_decode.DaliCropDecoder(
        stage_data.batches.image_size, stage_data.batches.local_batch_size
    )
    local_batches = map(decode, local_batches)
  return sharding.prefetch_to_device(local_batches, mesh)


def is_eval_step(
    done: int, config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
) -> bool:
  """Evaluate after the last step and every ``eval_every_epochs``-th epoch (not at step 0)."""
  if done <= 0:
    return False
  epoch_end = done % steps_per_epoch == 0
  return done == total_steps or (
      epoch_end and (done // steps_per_epoch) % config.eval_every_epochs == 0
  )


class Evaluations:
  """The steps of a stage whose evaluation completed (rows written, best/ offered).

  Kept in ``<workdir>/evaluated_steps.json`` (process 0 writes it; a new run
  writes it empty before its first step, also over an earlier attempt's file
  whose checkpoints were lost: its steps would make a later resume skip an
  evaluation and the best/ offer that goes with it), so a resumed run knows
  whether the evaluation of its checkpoint's step finished. A resumed workdir
  without the file was written before it existed: every step counts as
  evaluated there (nothing is redone), as those runs did.
  """

  FILENAME = 'evaluated_steps.json'

  def __init__(self, workdir: str, *, resumed: bool):
    self.path = files.join(workdir, self.FILENAME)
    recorded = resumed and files.exists(self.path)
    self.legacy = resumed and not recorded
    fix = 'Delete it: the resumed run then counts every step as evaluated.'
    self.steps = set(files.read_json(self.path, fix=fix)) if recorded else set()
    if not resumed and jax.process_index() == 0:
      files.write_json(self.path, [])

  def __contains__(self, step: int) -> bool:
    return self.legacy or step in self.steps

  def add(self, step: int) -> None:
    self.steps.add(int(step))
    if jax.process_index() == 0:
      files.write_json(self.path, sorted(self.steps))


def eval_line(done: int, steps_per_epoch: int, results: dict) -> str:
  """The progress line of an evaluation."""
  return (
      f'step {done} epoch {done / steps_per_epoch:.1f}: test '
      f'accuracy {100 * results["accuracy"]:.2f} balanced '
      f'{100 * results["balanced_accuracy"]:.2f} many '
      f'{100 * results["many"]:.2f} medium {100 * results["medium"]:.2f} '
      f'few {100 * results["few"]:.2f}'
  )


def adjust(stage: Stage, state: TrainState, stage_data: StageData, mesh, results: dict) -> dict:
  """The post-hoc adjustment of ``config.posthoc``, chosen on validation; printed beside."""
  config = stage.config
  writer = MetricWriter(stage.workdir)
  try:
    adjusted = final_adjustment.adjust_final_model(
        config,
        state,
        make_eval_step(state, mesh, flip_tta=config.eval.flip_tta),
        eval_splits=stage_data.eval_splits,
        train_counts=stage_data.train_counts,
        mesh=mesh,
        workdir=stage.workdir,
        write=functools.partial(
            writer.write, step=int(state.step), epoch=int(state.step) / stage_data.steps_per_epoch
        ),
    )
  finally:
    writer.close()
  if jax.process_index() == 0:
    print(eval_metrics.format_table(results, title='Without post-hoc adjustment:'))
    print(
        eval_metrics.format_table(
            adjusted['metrics'],
            title=(
                f'With post-hoc {adjusted["method"]} adjustment, value {adjusted["value"]:g} '
                'chosen on the validation split:'
            ),
        )
    )
  return adjusted


def report(stage: Stage, state: TrainState, stage_data: StageData, results: dict) -> None:
  """Logs skipped images; plots per-class accuracy and prints the tables (process 0)."""
  config, splits = stage.config, stage_data.splits
  skipped = set()
  for split in (splits.train, splits.val, splits.test):
    if hasattr(split, 'skipped'):
      skipped |= split.skipped()
  if skipped:
    logging.warning(
        '%d unreadable images were skipped (data.skip_corrupt); they are ' 'listed in %s.',
        len(skipped),
        stage_data.skip_log_dir,
    )
  if jax.process_index() != 0:
    return
  plots.plot_per_class_accuracy(
      results['per_class_accuracy'],
      stage_data.train_counts,
      files.join(stage.workdir, 'per_class_accuracy.png'),
      class_names=splits.train.class_names,
      title=f'{config.data.name} (imbalance ratio {config.data.imbalance_ratio})',
  )
  print(
      eval_metrics.format_table(
          results,
          title=f'Test results of {stage.name} at step ' f'{int(state.step)} ({stage.workdir}):',
      )
  )
  print(
      eval_metrics.format_per_class(
          results['per_class_accuracy'],
          stage_data.train_counts,
          splits.train.class_names,
          **eval_metrics.group_options(config.eval),
      )
  )
