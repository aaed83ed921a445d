"""The training loop: config -> data -> jitted steps -> metrics, checkpoints, plots.

``train_and_evaluate(config, workdir)`` is what ``launch/train.py`` and the
notebooks call. It resumes from the newest checkpoint in ``workdir`` if there
is one; since the data order and the step randomness are functions of the
step, the resumed run ends with the same parameters as an uninterrupted one.

Host syncs happen only at log, eval and checkpoint time: per-step metrics stay
on device until then. Non-finite losses are detected at those points, before
any checkpoint is written, so the last good checkpoint always survives.
"""

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
import tqdm

from ltjax import data
from ltjax import eval as ltjax_eval
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax.eval import plots
from ltjax.train import sharding
from ltjax.train.checkpoint import Checkpoints
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


def _check_batch_size(batch_size: int, name: str) -> None:
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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       hooks: Iterable[Hook] = ()) -> tuple[TrainState, dict]:
  """Trains ``config`` in ``workdir`` (resuming if possible) and evaluates it.

  Returns:
    The final state and the final test metrics.
  """
  if '://' not in workdir:  # orbax needs absolute local paths; gs:// etc. are left alone.
    workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  if config.dtype not in DTYPES:
    raise ValueError(f'Unknown config.dtype {config.dtype!r}; valid: {sorted(DTYPES)}.')
  _check_batch_size(config.batch_size, 'batch_size')
  _check_batch_size(config.eval_batch_size, 'eval_batch_size')

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
  objective = losses.build_objective(config.loss, train_counts,
                                     steps_per_epoch=steps_per_epoch,
                                     num_epochs=config.num_epochs)
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
  start_step = int(state.step)

  train_step = make_train_step(state, mesh, objective=objective)
  writer = MetricWriter(workdir)
  eval_on = functools.partial(
      evaluate, eval_step=make_eval_step(state, mesh, flip_tta=config.eval.flip_tta),
      mesh=mesh, batch_size=config.eval_batch_size, train_counts=train_counts,
      eval_config=config.eval)
  eval_splits = {'test': splits.test}
  if splits.val is not None:
    eval_splits['val'] = splits.val

  def run_eval(state, step):
    """Evaluates every split, writes its rows; returns {split: metrics}."""
    out = {}
    for name, dataset in eval_splits.items():
      out[name] = eval_on(state, dataset=dataset)
      writer.write(step=step, epoch=step / steps_per_epoch, split=name, **out[name])
    return out

  train_log = _TrainLog(writer, schedule, steps_per_epoch, workdir, checkpoints)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                       disable=not config.progress_bar or jax.process_index() != 0,
                       dynamic_ncols=True, file=sys.stdout)
  results = None
  local_batches = batches.iterate(start_step, total_steps - start_step,
                                  num_threads=config.data.read_threads,
                                  num_workers=config.data.num_workers)
  try:
    device_batches = sharding.prefetch_to_device(local_batches, mesh)
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
    results = eval_on(state, dataset=splits.test)
  if jax.process_index() == 0:
    plots.plot_per_class_accuracy(
        results['per_class_accuracy'], train_counts,
        os.path.join(workdir, 'per_class_accuracy.png'),
        class_names=train_set.class_names,
        title=f'{config.data.name} (imbalance ratio {config.data.imbalance_ratio})')
    print(ltjax_eval.format_table(results, title=f'Test results at step {int(state.step)} '
                                                 f'({workdir}):'))
    print(ltjax_eval.metrics.format_per_class(results['per_class_accuracy'], train_counts,
                                              train_set.class_names))
  return state, results
