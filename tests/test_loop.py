"""Tests for ltjax.train.loop: whole runs end to end, resumption, NaN stops, bad input."""

import glob
import os

import chex
import jax
import numpy as np
import pytest

from configs import ce_places_lt
from configs import smoke
from helpers import Interrupt
from helpers import interrupt_at
from helpers import read_rows
from helpers import requires_fashion_mnist
from helpers import tiny_config
from helpers import write_places_folder
from ltjax import data
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import loop
from ltjax.train import predict
from ltjax.train import sharding


@requires_fashion_mnist
def test_smoke_config_end_to_end(tmp_path):
  """The default two-stage CC-SAM recipe, shortened: every output of both stages."""
  workdir = str(tmp_path / 'smoke')
  config = smoke.get_config()
  state, results = train.train_and_evaluate(config, workdir)
  stage2_steps = data.long_tail_counts(10, 1000, 100).sum() // config.batch_size
  assert int(state.step) == stage2_steps  # One stage-2 epoch (class-aware: N samples).
  for directory, last_step in (
      (workdir, config.num_train_steps),
      (os.path.join(workdir, 'stage2'), stage2_steps),
  ):
    rows = read_rows(directory)
    train_rows = [r for r in rows if r['split'] == 'train']
    test_rows = [r for r in rows if r['split'] == 'test']
    assert train_rows and test_rows
    for row in train_rows:
      assert {'step', 'epoch', 'split', 'loss', 'learning_rate'} <= set(row)
      assert np.isfinite(row['loss'])
    for key in ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few'):
      assert 0.0 <= test_rows[-1][key] <= 1.0
    assert os.path.getsize(os.path.join(directory, 'per_class_accuracy.png')) > 1000
    assert any(
        f.startswith('events.out.tfevents')
        for f in os.listdir(os.path.join(directory, 'tensorboard'))
    )
    assert os.listdir(os.path.join(directory, 'checkpoints')) == [str(last_step)]
    assert os.listdir(os.path.join(directory, 'best')) == [str(last_step)]
  stage1_rows = [r for r in read_rows(workdir) if r['split'] == 'train']
  assert 'cc_sam_flat_loss' in stage1_rows[-1]  # CC-SAM was on in stage 1 ...
  stage2_rows = [r for r in read_rows(os.path.join(workdir, 'stage2')) if r['split'] == 'train']
  assert 'adversarial_loss' in stage2_rows[-1]  # ... and adversarial features in stage 2.
  test_rows = [r for r in read_rows(os.path.join(workdir, 'stage2')) if r['split'] == 'test']
  for key in ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few'):
    assert test_rows[-1][key] == pytest.approx(results[key])
  assert len(results['per_class_accuracy']) == 10


def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path):
  config = tiny_config(checkpoint_every_steps=4)
  full_state, full_results = train.train_and_evaluate(config, str(tmp_path / 'full'))

  workdir = str(tmp_path / 'resumed')
  with pytest.raises(Interrupt):
    train.train_and_evaluate(config, workdir, hooks=[interrupt_at(6)])
  # Step 6 was not checkpointed: the resume starts from step 4 and redoes 5-6.
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4']
  resumed_state, resumed_results = train.train_and_evaluate(config, workdir)

  assert int(resumed_state.step) == int(full_state.step) == 12
  # Every leaf of the state (TrainState's static apply_fn and tx are per run).
  leaves = lambda s: jax.device_get((s.step, s.params, s.batch_stats, s.opt_state, s.rng))
  chex.assert_trees_all_equal(leaves(full_state), leaves(resumed_state))
  np.testing.assert_equal(resumed_results, full_results)  # NaN == NaN here.
  # Running a finished workdir again trains nothing and reports the same numbers.
  again_state, again_results = train.train_and_evaluate(config, workdir)
  assert int(again_state.step) == 12
  np.testing.assert_equal(again_results, full_results)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  # The learning rate jumps by 1e30 at step 5: the loss blows up right after.
  config = tiny_config(checkpoint_every_steps=4, log_every_steps=1)
  steps_per_epoch = data.long_tail_counts(10, 40, 4.0).sum() // config.batch_size
  config.schedule.name = 'warmup_multistep'
  config.schedule.milestones = (5 / steps_per_epoch,)
  config.schedule.gamma = 1e30
  workdir = str(tmp_path / 'nan')
  with pytest.raises(FloatingPointError, match='Non-finite training metrics'):
    train.train_and_evaluate(config, workdir)
  checkpoints = train.Checkpoints(workdir)
  assert checkpoints.latest_step() == 4
  mesh = sharding.make_mesh()
  model = models.build_model(config.model, 10)
  tx = optim.base_optimizer(config.optim, lambda count: 0.1)  # The run's state structure.
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  restored = checkpoints.restore(state)
  checkpoints.close()
  assert int(restored.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(restored.params))


def test_training_learns_the_synthetic_task(tmp_path):
  # Chance is 10%; a broken gradient, loss or BN update stays there.
  _, results = train.train_and_evaluate(tiny_config(num_train_steps=40), str(tmp_path))
  assert results['accuracy'] > 0.4
  assert results['medium'] > results['few']


def test_validation_split_is_evaluated_and_selects_the_best(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(num_train_steps=4, **{'data.val_per_class': 5}), workdir)
  splits = {row['split'] for row in read_rows(workdir)}
  assert splits == {'train', 'val', 'test'}
  best = train.Checkpoints(workdir)
  assert best.best.best_step() == 4
  best.close()


def test_sam_config_trains_end_to_end(tmp_path):
  config = tiny_config(
      num_train_steps=3, **{'sam.rho_boundaries': (1,), 'sam.rho_values': (0.05, 0.1)}
  )
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 3 and np.isfinite(results['accuracy'])


def test_training_on_closed_classes_end_to_end(tmp_path):
  config = tiny_config(num_train_steps=4, log_every_steps=2, **{'data.open_classes': (3, 7)})
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 4
  kernel = jax.device_get(state.params['head']['kernel'])
  assert kernel.shape[-1] == 8
  assert len(results['per_class_accuracy']) == 8


def test_corrupt_image_fails_naming_it_or_is_skipped_and_reported(tmp_path):
  root = str(tmp_path / 'places')
  write_places_folder(root, 365, {'train': 1, 'val': 1, 'test': 1}, np.random.default_rng(0))
  with open(os.path.join(root, 'images/img_3.jpg'), 'r+b') as f:
    f.truncate(40)
  config = ce_places_lt.get_config()
  config.data.data_dir = root
  config.data.image_size = config.eval.image_size = 16
  config.model.name, config.dtype, config.progress_bar = 'small_cnn', 'float32', False
  config.data.num_workers = 0
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 128, 1
  with pytest.raises(OSError, match='(?s)test split cannot be read.*img_3.jpg.*skip_corrupt'):
    train.train_and_evaluate(config, str(tmp_path / 'strict'))
  # Found before training (it used to surface at the first evaluation, after training).
  assert not os.path.exists(tmp_path / 'strict' / 'checkpoints')
  config.data.skip_corrupt = True
  train.train_and_evaluate(config, str(tmp_path / 'lenient'))
  logs = glob.glob(str(tmp_path / 'lenient' / 'skipped_images' / 'skipped-*.txt'))
  assert logs and 'img_3.jpg' in open(logs[0]).read()


def test_stage1_trains_only_the_trainable_regex(tmp_path):
  config = tiny_config(num_train_steps=3, trainable='head/.*')
  workdir = str(tmp_path)
  state, _ = train.train_and_evaluate(config, workdir)
  model = models.build_model(config.model, 10)
  fresh = train.create_train_state(
      model,
      optim.base_optimizer(config.optim, lambda count: 0.0),
      input_shape=(28, 28, 1),
      seed=config.seed,
      mesh=sharding.make_mesh(jax.devices()[:1]),
  )
  final = jax.device_get(state)
  # Frozen: not even weight decay moves the backbone; the head trains.
  chex.assert_trees_all_equal(jax.device_get(fresh.params['backbone']), final.params['backbone'])
  assert not np.allclose(fresh.params['head']['kernel'], final.params['head']['kernel'])


def test_num_train_steps_sets_the_schedules_horizon(tmp_path):
  # 30 steps of a cosine schedule with num_epochs=1 (about 14 steps per epoch here): the
  # learning rate anneals over the 30 steps asked for, not over the first epoch.
  config = tiny_config(**{'num_train_steps': 30, 'log_every_steps': 5, 'schedule.name': 'cosine'})
  train.train_and_evaluate(config, str(tmp_path))
  rates = {r['step']: r['learning_rate'] for r in read_rows(str(tmp_path)) if r['split'] == 'train'}
  assert sorted(rates) == [5, 10, 15, 20, 25, 30]
  schedule = optim.build_schedule(config.schedule, base_lr=0.05, steps_per_epoch=30, num_epochs=1)
  for step, rate in rates.items():  # The row of step s logs the rate of step s - 1.
    np.testing.assert_allclose(rate, schedule(step - 1), rtol=1e-5)
  assert rates[25] > 0.001


def test_a_failing_evaluation_comes_after_the_checkpoint(tmp_path, monkeypatch):
  real = loop.make_evaluator

  def failing(*args, **kwargs):
    evaluate = real(*args, **kwargs)

    def evaluator(state, split):
      if int(state.step) == 8:
        raise OSError('the test set became unreadable')
      return evaluate(state, split)

    return evaluator

  monkeypatch.setattr(loop, 'make_evaluator', failing)
  config = tiny_config(num_train_steps=8)
  with pytest.raises(OSError, match='unreadable'):
    train.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / 'checkpoints') == ['8']  # Training is not lost.


def test_a_stage2_mistake_fails_before_stage1_trains(tmp_path):
  config = tiny_config(**{'stage2.num_epochs': 1, 'stage2.trainable': 'head/scale'})
  with pytest.raises(ValueError, match=r"(?s)Stage 2 .*'head/scale' matches no parameter"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


def test_a_stage1_trainable_regex_matching_nothing_fails_before_training(tmp_path):
  with pytest.raises(ValueError, match=r"'\^backbone/stage4_' matches no parameter"):
    train.train_and_evaluate(tiny_config(trainable='^backbone/stage4_'), str(tmp_path))
  assert not os.path.exists(tmp_path / 'checkpoints')


@pytest.mark.parametrize(
    'flip_tta,select_single_view,best_eval',
    [(True, True, 0), (True, False, 1), (False, True, 1)],
)
def test_select_single_view_chooses_the_best_checkpoint_on_unflipped_accuracy(
    tmp_path, monkeypatch, flip_tta, select_single_view, best_eval
):
  # Scripted scores per evaluation: flip-averaged best at the 2nd, single-view at the 1st.
  flip_averaged, single_view = [0.5, 0.9, 0.6], [0.8, 0.3, 0.4]
  real_make_evaluator = loop.make_evaluator
  real = []

  def scripted(*args, **kwargs):
    evaluate = real_make_evaluator(*args, **kwargs)

    def evaluator(state, split):
      metrics = evaluate(state, split)
      real.append(dict(metrics))
      i = len(real) - 1
      metrics['balanced_accuracy'] = flip_averaged[i]
      if predict.SINGLE_VIEW_BALANCED_ACCURACY in metrics:
        metrics[predict.SINGLE_VIEW_BALANCED_ACCURACY] = single_view[i]
      return metrics

    return evaluator

  monkeypatch.setattr(loop, 'make_evaluator', scripted)
  config = tiny_config(
      batch_size=64,
      num_train_steps=0,
      num_epochs=3,
      eval_every_epochs=1,
      **{
          'data.augment': 'none',  # Unflipped training: a flip changes the predictions.
          'optim.lr': 0.2,
          'eval.flip_tta': flip_tta,
          'eval.select_single_view': select_single_view,
      },
  )
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  rows = [r for r in read_rows(workdir) if r['split'] == 'test']
  assert len(rows) == len(real) == 3
  checkpoints = train.Checkpoints(workdir)
  assert checkpoints.best.best_step() == rows[best_eval]['step']
  checkpoints.close()
  # The rows report the flip-averaged numbers; the single-view one only where it is chosen on.
  assert [r['balanced_accuracy'] for r in rows] == flip_averaged
  computed = flip_tta and select_single_view
  for row, metrics in zip(rows, real):
    assert (predict.SINGLE_VIEW_BALANCED_ACCURACY in row) == computed
    assert (predict.SINGLE_VIEW_BALANCED_ACCURACY in metrics) == computed
  if computed:
    assert [r[predict.SINGLE_VIEW_BALANCED_ACCURACY] for r in rows] == single_view
    # Mirrored gratings are other classes: the unflipped accuracy differs from the averaged one.
    assert any(m[predict.SINGLE_VIEW_BALANCED_ACCURACY] != m['balanced_accuracy'] for m in real)


def test_selection_score_follows_the_single_view_key_only_with_flip_tta():
  metrics = {'balanced_accuracy': 0.6, predict.SINGLE_VIEW_BALANCED_ACCURACY: 0.7}
  config = tiny_config()
  assert loop.selection_score(metrics, config.eval) == 0.6
  config.eval.select_single_view = True
  assert loop.selection_score(metrics, config.eval) == 0.6  # No flip: one view already.
  config.eval.flip_tta = True
  assert loop.selection_score(metrics, config.eval) == 0.7
  config.eval.select_single_view = False
  assert loop.selection_score(metrics, config.eval) == 0.6


def test_rank_groups_in_a_run_and_group_sizes_beyond_the_classes_fail_before_training(tmp_path):
  groups = {'eval.groups': 'rank', 'eval.group_sizes': (3, 4)}
  _, results = train.train_and_evaluate(tiny_config(num_train_steps=2, **groups), str(tmp_path))
  # Synthetic counts fall with the class index: many 0-2, medium 3-6, few 7-9.
  per_class = np.array(results['per_class_accuracy'])
  for name, members in (('many', [0, 1, 2]), ('medium', [3, 4, 5, 6]), ('few', [7, 8, 9])):
    assert results[name] == pytest.approx(per_class[members].mean())
  config = tiny_config(**{'eval.groups': 'rank', 'eval.group_sizes': (8, 5)})
  with pytest.raises(ValueError, match=r'config.eval.group_sizes=\(8, 5\) .* 10 classes'):
    train.train_and_evaluate(config, str(tmp_path / 'too_many'))
  assert not os.path.exists(tmp_path / 'too_many' / 'checkpoints')
