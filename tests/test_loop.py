"""The training loop end to end: outputs, sharding, resumption, bad input."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import smoke
from conftest import REPO
from conftest import requires_fashion_mnist
from conftest import tiny_config
from ltjax import data
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding



def read_rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


@requires_fashion_mnist
def test_smoke_config_end_to_end(tmp_path):
  """The default two-stage CC-SAM recipe, shortened: every output of both stages."""
  workdir = str(tmp_path / 'smoke')
  config = smoke.get_config()
  state, results = train.train_and_evaluate(config, workdir)
  stage2_steps = data.long_tail_counts(10, 1000, 100).sum() // config.batch_size
  assert int(state.step) == stage2_steps  # One stage-2 epoch (class-aware: N samples).
  for directory, last_step in ((workdir, config.num_train_steps),
                               (os.path.join(workdir, 'stage2'), stage2_steps)):
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
    assert any(f.startswith('events.out.tfevents')
               for f in os.listdir(os.path.join(directory, 'tensorboard')))
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


class Interrupt(Exception):
  pass


def interrupt_at(stop_step):
  def hook(step, state):
    del state
    if step == stop_step:
      raise Interrupt(step)
  return hook


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
  for full, resumed in zip(jax.tree.leaves(jax.device_get(full_state)),
                           jax.tree.leaves(jax.device_get(resumed_state))):
    np.testing.assert_array_equal(full, resumed)
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


def run_steps(mesh, batches, dtype=jnp.float32, cc_sam=False):
  config = tiny_config()
  if cc_sam:  # A radius large enough to matter.
    config.cc_sam.flat_ratio, config.cc_sam.noise_ratio = 0.5, 0.5
  model = models.build_model(config.model, 10, dtype=dtype)
  tx = optim.torch_sgd(0.05, momentum=0.9, weight_decay=5e-4)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  objective = losses.build_objective(config.loss, np.arange(10) * 10 + 5, steps_per_epoch=10,
                                     num_epochs=1, cc_sam_config=config.cc_sam)
  step = train.make_train_step(state, mesh, objective=objective)
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, mesh))
  assert step._cache_size() == 1  # Traced and compiled once.
  return jax.device_get(state), jax.device_get(metrics)


def random_batches(n, size=32):
  rng = np.random.default_rng(0)
  return [{'image': rng.normal(size=(size, 28, 28, 1)).astype(np.float32),
           'label': rng.integers(0, 10, size).astype(np.int32)} for _ in range(n)]


@pytest.mark.parametrize('cc_sam', [False, True])
def test_eight_device_step_equals_one_device_step(cc_sam):
  assert jax.device_count() == 8
  batches = random_batches(3)
  one, one_metrics = run_steps(sharding.make_mesh(jax.devices()[:1]), batches, cc_sam=cc_sam)
  eight, eight_metrics = run_steps(sharding.make_mesh(), batches, cc_sam=cc_sam)
  if cc_sam:
    assert one_metrics['cc_sam_flat_loss'] > 0
  # Global BatchNorm statistics: the sharded step is the same computation.
  for a, b in zip(jax.tree.leaves((one.params, one.batch_stats)),
                  jax.tree.leaves((eight.params, eight.batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(one_metrics['loss'], eight_metrics['loss'], rtol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  state, metrics = run_steps(sharding.make_mesh(), random_batches(2), dtype=jnp.bfloat16)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(state.params))
  assert np.isfinite(metrics['loss'])


def run_launcher(*args):
  env = dict(os.environ, XLA_FLAGS='', JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, os.path.join(REPO, 'launch', 'train.py'), *args],
                        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_config_typo_names_the_nearest_key(tmp_path):
  result = run_launcher('--config=configs/smoke.py', '--config.optim.lrr=0.1',
                        f'--workdir={tmp_path}')
  assert result.returncode != 0
  assert 'Did you mean "lr" instead of "lrr"?' in result.stderr
  assert not os.listdir(tmp_path)  # Failed before creating anything.


def test_unknown_model_lists_valid_names():
  config = tiny_config()
  config.model.name = 'resnet33'
  with pytest.raises(ValueError, match="Unknown model.name 'resnet33'.*'resnet32'"):
    models.build_model(config.model, 10)


def test_training_learns_the_synthetic_task(tmp_path):
  # Chance is 10%; a broken gradient, loss or BN update stays there.
  _, results = train.train_and_evaluate(tiny_config(num_train_steps=40), str(tmp_path))
  assert results['accuracy'] > 0.4
  assert results['medium'] > results['few']


def test_validation_split_is_evaluated_and_selects_the_best(tmp_path):
  workdir = str(tmp_path)
  train.train_and_evaluate(tiny_config(num_train_steps=4, **{'data.val_per_class': 5}),
                           workdir)
  splits = {row['split'] for row in read_rows(workdir)}
  assert splits == {'train', 'val', 'test'}
  best = train.Checkpoints(workdir)
  assert best.best.best_step() == 4
  best.close()


def restore_params(workdir, config, which='best'):
  model = models.build_model(config.model, 10)
  tx = optim.base_optimizer(config.optim, lambda count: 0.0)
  abstract = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=config.seed,
                                      mesh=sharding.make_mesh())
  checkpoints = train.Checkpoints(workdir)
  try:
    return jax.device_get(checkpoints.restore(abstract, which=which))
  finally:
    checkpoints.close()


@pytest.mark.parametrize('bn', ['frozen', 'update'])
def test_two_stage_run_freezes_the_backbone_and_retrains_the_head(tmp_path, bn):
  config = tiny_config(num_train_steps=6, eval_every_epochs=1)
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.sampler, s2.bn, s2.max_norm = 1, 'reinit', 'class_aware', bn, 0.1
  s2.optim.lr, s2.optim.weight_decay = 0.05, 0.1
  workdir = str(tmp_path)
  state, results = train.train_and_evaluate(config, workdir)
  stage1 = restore_params(workdir, config)
  final = jax.device_get(state)
  for a, b in zip(jax.tree.leaves(stage1.params['backbone']),
                  jax.tree.leaves(final.params['backbone'])):
    np.testing.assert_array_equal(a, b)  # Frozen: not even weight decay moves it.
  assert not np.allclose(stage1.params['head']['kernel'], final.params['head']['kernel'])
  stats_equal = all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(stage1.batch_stats), jax.tree.leaves(final.batch_stats)))
  assert stats_equal == (bn == 'frozen')
  # MaxNorm: thresholds from the stage-1 classifier bound every class vector.
  bound = optim.max_norm_thresholds(stage1.params['head']['kernel'], 0.1)
  assert np.all(np.linalg.norm(final.params['head']['kernel'], axis=0) <= bound * (1 + 1e-5))
  splits = {row['split'] for row in read_rows(os.path.join(workdir, 'stage2'))}
  assert splits == {'train', 'test'}
  assert os.path.exists(os.path.join(workdir, 'stage2', 'per_class_accuracy.png'))
  # Running again resumes both stages from their checkpoints and trains nothing.
  again, again_results = train.train_and_evaluate(config, workdir)
  np.testing.assert_equal(again_results, results)


def test_feature_cache_stage2_equals_the_backbone_path(tmp_path):
  """Frozen BN, no augmentation: the head trained on cached features matches."""
  config = tiny_config(num_train_steps=6, eval_every_epochs=1)
  config.eval.flip_tta = True
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.sampler, s2.bn, s2.augment = 2, 'reinit', 'class_aware', 'frozen', 'none'
  s2.loss.adversarial_weight, s2.loss.adversarial_cap = 1.0, 0.3  # CC-SAM stage 2.
  s2.optim.lr, s2.optim.weight_decay = 0.05, 0.01
  s2.feature_cache = 'on'
  cached_dir, plain_dir = str(tmp_path / 'cached'), str(tmp_path / 'plain')
  cached, cached_results = train.train_and_evaluate(config, cached_dir)
  shutil.copytree(cached_dir, plain_dir, ignore=shutil.ignore_patterns('stage2'))
  config.stage2.feature_cache = 'off'
  plain, plain_results = train.train_and_evaluate(config, plain_dir)  # Stage 1 is complete.
  np.testing.assert_allclose(jax.device_get(cached.params['head']['kernel']),
                             jax.device_get(plain.params['head']['kernel']), atol=1e-5)
  np.testing.assert_allclose(cached_results['per_class_accuracy'],
                             plain_results['per_class_accuracy'], atol=1e-3)
  rows = lambda d: [r for r in read_rows(os.path.join(d, 'stage2')) if r['split'] == 'train']
  np.testing.assert_allclose([r['loss'] for r in rows(cached_dir)],
                             [r['loss'] for r in rows(plain_dir)], rtol=1e-5)


def test_feature_cache_on_names_what_makes_it_inexact(tmp_path):
  config = tiny_config(num_train_steps=2)
  config.stage2.num_epochs, config.stage2.feature_cache = 1, 'on'  # bn 'update', crop_flip.
  with pytest.raises(ValueError, match="stage2.bn='frozen'.*stage2.augment='none'"):
    train.train_and_evaluate(config, str(tmp_path))


def test_head_only_step_equals_the_full_backward_step():
  """stop_gradient at the features changes nothing when the backbone is frozen."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.build_model(tiny_config().model, 10)
  tx = optim.freeze(optim.torch_sgd(0.1, momentum=0.9, weight_decay=5e-4), 'head/.*')
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  rng = np.random.default_rng(0)
  batch = sharding.to_global({'image': rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
                              'label': rng.integers(0, 10, 8).astype(np.int32)}, mesh)
  objective = losses.simple_objective(
      functools.partial(losses.softmax_cross_entropy, reduction='mean'))
  outs = [train.steps.train_step(state, batch, objective=objective, head_only=h)
          for h in (False, True)]
  for a, b in zip(jax.tree.leaves(outs[0][0].params), jax.tree.leaves(outs[1][0].params)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  for a, b in zip(jax.tree.leaves(outs[0][0].batch_stats), jax.tree.leaves(outs[1][0].batch_stats)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert np.isclose(outs[0][1]['loss'], outs[1][1]['loss'])


def test_stage2_without_stage1_checkpoint_fails_clearly(tmp_path):
  config = tiny_config()
  config.stage2.num_epochs = 1
  stage = train.plan_stages(config, str(tmp_path))[1]
  with pytest.raises(FileNotFoundError, match='train stage 1 first'):
    train.run_stage(stage)


def test_sam_step_uses_the_perturbed_gradient_and_clean_bn_statistics():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = tiny_config()
  model = models.build_model(config.model, 10)
  rho, lr = 0.5, 0.1
  tx = optim.sam(optim.torch_sgd(lr, momentum=0.0), rho=rho)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  objective = losses.build_objective(config.loss, np.ones(10), steps_per_epoch=10,
                                     num_epochs=1)
  batch = random_batches(1, size=8)[0]
  step = train.make_train_step(state, mesh, objective=objective, sam=True)
  before = jax.device_get(state)

  def loss_and_stats(params):
    (logits, _), new = model.apply({'params': params, 'batch_stats': before.batch_stats},
                                   batch['image'], train=True, mutable=['batch_stats'])
    return losses.softmax_cross_entropy(logits, batch['label'], reduction='mean'), new

  grads, clean_stats = jax.grad(loss_and_stats, has_aux=True)(before.params)
  norm = optax.global_norm(grads)
  perturbed = jax.tree.map(lambda p, g: p + rho * g / (norm + 1e-12), before.params, grads)
  adv_grads, adv_stats = jax.grad(loss_and_stats, has_aux=True)(perturbed)
  expected = jax.tree.map(lambda p, g: p - lr * g, before.params, adv_grads)

  after, _ = step(state, sharding.to_global(batch, mesh))
  after = jax.device_get(after)
  for a, b in zip(jax.tree.leaves(after.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  gap = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(clean_stats), jax.tree.leaves(adv_stats)))
  assert gap > 1e-4  # The two passes' statistics are distinguishable ...
  for a, b in zip(jax.tree.leaves(after.batch_stats), jax.tree.leaves(clean_stats)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # ... and the clean ones are kept.


def test_sam_config_trains_end_to_end(tmp_path):
  config = tiny_config(num_train_steps=3, **{'sam.rho_boundaries': (1,),
                                             'sam.rho_values': (0.05, 0.1)})
  state, results = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 3 and np.isfinite(results['accuracy'])


def test_cpu_steps_keep_convolutions_off_ynnpack(monkeypatch):
  """The CPU compile option is applied, and either opt-out leaves XLA's defaults."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  monkeypatch.delenv('LTJAX_XLA_CPU_DEFAULTS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  options = train.steps.compiler_options(mesh)
  assert options == {'xla_cpu_experimental_ynn_fusion_type':
                     'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}
  monkeypatch.setenv('LTJAX_XLA_CPU_DEFAULTS', '0')
  assert train.steps.compiler_options(mesh) is None
  monkeypatch.delenv('LTJAX_XLA_CPU_DEFAULTS')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=')
  assert train.steps.compiler_options(mesh) is None


def test_feature_cache_reasons_cover_every_inexact_setting():
  reasons = lambda **kw: train.feature_cache.unavailable_reasons(**{
      'head_only': True, 'train_bn': False, 'augment': 'none', 'mixup_alpha': 0.0, **kw})
  assert reasons() == []
  assert reasons(eval_image_size=224) == [train.feature_cache.RESIZED_FOR_EVAL]
  assert len(reasons(head_only=False, train_bn=True, augment='flip', mixup_alpha=1.0)) == 4
