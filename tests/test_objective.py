"""Tests for ltjax.losses.objective: the loss table, schedules and regularisers from configs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from helpers import tiny_config
from ltjax import losses
from ltjax import train
from ltjax.models import heads

COUNTS = np.array([500, 200, 80, 30, 10, 3])
RNG = np.random.default_rng(0)
LOGITS = jnp.asarray(RNG.normal(0, 3, (12, 6)), jnp.float32)
LABELS = jnp.asarray(RNG.integers(0, 6, 12))
FEATURES = jnp.asarray(RNG.normal(0, 1, (12, 8)), jnp.float32)
HEAD = {'kernel': jnp.asarray(RNG.normal(0, 1, (8, 6)), jnp.float32), 'bias': jnp.zeros(6)}


def objective_of(steps_per_epoch=10, num_epochs=20, **overrides):
  config = base.get_config().loss
  config.update(overrides)
  return losses.build_objective(
      config, COUNTS, steps_per_epoch=steps_per_epoch, num_epochs=num_epochs
  )


def value(objective, step=0, **kwargs):
  loss, metrics = objective(
      LOGITS, LABELS, features=FEATURES, head_params=HEAD, step=jnp.asarray(step), **kwargs
  )
  return float(loss), metrics


@pytest.mark.parametrize(
    'name,direct',
    [
        ('cross_entropy', lambda: losses.softmax_cross_entropy(LOGITS, LABELS, reduction='mean')),
        ('focal', lambda: losses.focal_loss(LOGITS, LABELS, gamma=2.0, reduction='mean')),
        (
            'class_balanced',
            lambda: losses.class_balanced_loss(
                LOGITS, LABELS, class_counts=COUNTS, beta=0.9999, reduction='mean'
            ),
        ),
        ('ldam', lambda: losses.ldam_loss(LOGITS, LABELS, class_counts=COUNTS, reduction='mean')),
        (
            'balanced_softmax',
            lambda: losses.balanced_softmax_loss(
                LOGITS, LABELS, class_counts=COUNTS, reduction='mean'
            ),
        ),
        (
            'logit_adjusted',
            lambda: losses.logit_adjusted_loss(
                LOGITS, LABELS, class_counts=COUNTS, tau=1.0, reduction='mean'
            ),
        ),
        (
            'vs',
            lambda: losses.vs_loss(
                LOGITS, LABELS, class_counts=COUNTS, gamma=0.3, tau=1.0, reduction='mean'
            ),
        ),
        ('lort', lambda: losses.lort_loss(LOGITS, LABELS, delta=0.98, reduction='mean')),
    ],
)
def test_every_loss_name_is_its_function(name, direct):
  loss, metrics = value(objective_of(name=name))
  np.testing.assert_allclose(loss, float(direct()), rtol=1e-6)
  assert set(metrics) == {'classification_loss'}


def test_drw_switches_to_effective_number_weights_at_the_switch_epoch():
  objective = objective_of(schedule='drw', switch_epoch=3)
  plain = float(losses.softmax_cross_entropy(LOGITS, LABELS, reduction='mean'))
  weights = losses.effective_number_weights(COUNTS, 0.9999)
  weighted = float(
      losses.softmax_cross_entropy(LOGITS, LABELS, class_weights=weights, reduction='mean')
  )
  assert value(objective, step=29)[0] == pytest.approx(plain, rel=1e-6)  # Epoch 2.
  assert value(objective, step=30)[0] == pytest.approx(weighted, rel=1e-5)  # Epoch 3.


def test_adrw_tla_becomes_weighted_logit_adjustment():
  objective = objective_of(
      name='vs', schedule='adrw_tla', switch_epoch=2, vs_gamma=0.2, vs_tau=0.75, adrw_nu=0.25
  )
  before = losses.vs_loss(
      LOGITS, LABELS, class_counts=COUNTS, gamma=0.2, tau=0.75, reduction='mean'
  )
  prior = COUNTS / COUNTS.sum()
  alpha = prior**-0.25 * len(COUNTS) / (prior**-0.25).sum()
  after = losses.logit_adjusted_loss(
      LOGITS, LABELS, class_counts=COUNTS, tau=0.75, class_weights=alpha, reduction='mean'
  )
  assert value(objective, step=19)[0] == pytest.approx(float(before), rel=1e-5)
  assert value(objective, step=20)[0] == pytest.approx(float(after), rel=1e-5)


def test_drw_tla_truncates_vs_and_reweights_with_drw():
  objective = objective_of(
      name='vs', schedule='drw_tla', switch_epoch=2, vs_gamma=0.2, vs_tau=0.75, drw_beta=0.9999
  )
  before = losses.vs_loss(
      LOGITS, LABELS, class_counts=COUNTS, gamma=0.2, tau=0.75, reduction='mean'
  )
  weights = losses.effective_number_weights(COUNTS, 0.9999)
  after = losses.logit_adjusted_loss(
      LOGITS, LABELS, class_counts=COUNTS, tau=0.75, class_weights=weights, reduction='mean'
  )
  assert value(objective, step=19)[0] == pytest.approx(float(before), rel=1e-5)
  assert value(objective, step=20)[0] == pytest.approx(float(after), rel=1e-5)


def test_regularizers_add_with_their_weights():
  plain = value(objective_of())[0]
  loss, metrics = value(objective_of(feature_norm_weight=0.01))
  fr = float(jnp.mean(jnp.sum(FEATURES**2, -1)) / 2)
  assert loss == pytest.approx(plain + 0.01 * fr, rel=1e-6)
  assert float(metrics['feature_norm_reg']) == pytest.approx(fr, rel=1e-6)

  # LWR on the plain head uses the class vectors W[:, c]; lambda(t) decays from lambda0.
  lwr = float(losses.lwr_regularizer(HEAD['kernel'].T, theta=0.4, tau=0.1))
  objective = objective_of(lwr_weight=0.5, num_epochs=20, steps_per_epoch=10)
  assert value(objective, step=0)[0] == pytest.approx(plain + 0.5 * lwr, rel=1e-5)
  assert value(objective, step=100)[0] == pytest.approx(plain + 0.5 * 0.25 * lwr, rel=1e-5)
  # LWR Table 4's fixed lambda: lambda0 throughout.
  constant = objective_of(
      lwr_weight=0.5, lwr_schedule='constant', num_epochs=20, steps_per_epoch=10
  )
  assert value(constant, step=100)[0] == pytest.approx(plain + 0.5 * lwr, rel=1e-5)


def test_lwr_uses_the_projection_of_the_lwr_head():
  head = heads.LWRHead(num_classes=6)
  params = head.init(jax.random.PRNGKey(0), FEATURES)['params']
  objective = objective_of(lwr_weight=1.0)
  loss, metrics = objective(
      LOGITS, LABELS, features=FEATURES, head_params=params, step=jnp.asarray(0)
  )
  expected = losses.lwr_regularizer(heads.lwr_projected_weights(params), theta=0.4, tau=0.1)
  np.testing.assert_allclose(metrics['lwr_reg'], expected, rtol=1e-6)


def test_mixup_mixes_the_classification_loss_only():
  partner = jnp.roll(LABELS, 1)
  objective = objective_of(feature_norm_weight=0.1)
  mixed, _ = value(objective, mixup=(partner, 0.3))
  ce = lambda y: float(losses.softmax_cross_entropy(LOGITS, y, reduction='mean'))
  fr = float(jnp.mean(jnp.sum(FEATURES**2, -1)) / 2)
  assert mixed == pytest.approx(0.3 * ce(LABELS) + 0.7 * ce(partner) + 0.1 * fr, rel=1e-5)


def test_invalid_combinations_fail_with_the_valid_choices():
  with pytest.raises(ValueError, match="Unknown loss.name 'ce'"):
    objective_of(name='ce')
  with pytest.raises(ValueError, match="Unknown loss.schedule 'drw2'"):
    objective_of(schedule='drw2')
  with pytest.raises(ValueError, match='does not support; use one of'):
    objective_of(name='lort', schedule='drw')
  with pytest.raises(ValueError, match="set loss.name='vs'"):
    objective_of(name='cross_entropy', schedule='tla')


def test_ldam_drw_with_cosine_head_and_lwr_head_train_end_to_end(tmp_path):
  for i, overrides in enumerate(
      [
          {
              'loss.name': 'ldam',
              'model.head': 'cosine',
              'loss.schedule': 'drw',
              'loss.switch_epoch': 0,
              'loss.feature_norm_weight': 0.01,
          },
          {'loss.name': 'balanced_softmax', 'model.head': 'lwr', 'loss.lwr_weight': 0.1},
      ]
  ):
    state, results = train.train_and_evaluate(
        tiny_config(num_train_steps=4, **overrides), str(tmp_path / str(i))
    )
    assert int(state.step) == 4 and np.isfinite(results['accuracy'])


# ---------------------------------------------------------------------------
# loss.weighted_reduction: the normaliser of class-weighted losses
# ---------------------------------------------------------------------------


def np_cross_entropy(z, y):
  """Unweighted per-example CE, -log softmax(z)_y, in float64."""
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  log_p = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
  return -log_p[np.arange(len(y)), np.asarray(y)]


def test_weighted_reduction_of_drw_cross_entropy_against_numpy():
  w = np.asarray(losses.effective_number_weights(COUNTS, 0.9999), np.float64)[np.asarray(LABELS)]
  weighted = w * np_cross_entropy(LOGITS, LABELS)  # w_i l_i.
  got = {
      r: value(objective_of(schedule='drw', switch_epoch=0, weighted_reduction=r))[0]
      for r in ('weight_sum', 'batch')
  }
  assert got['weight_sum'] == pytest.approx(weighted.sum() / w.sum(), rel=1e-5)  # PyTorch.
  assert got['batch'] == pytest.approx(weighted.mean(), rel=1e-5)  # sum_i w_i l_i / B.
  assert got['batch'] / got['weight_sum'] == pytest.approx(w.sum() / len(w), rel=1e-5)
  # Before the DRW switch the weights are ones: both are the plain mean.
  plain = np_cross_entropy(LOGITS, LABELS).mean()
  for r in ('weight_sum', 'batch'):
    objective = objective_of(schedule='drw', switch_epoch=3, weighted_reduction=r)
    assert value(objective, step=0)[0] == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize(
    'name,per_example',
    [
        ('focal', lambda w: losses.focal_loss(LOGITS, LABELS, gamma=2.0, class_weights=w)),
        (
            'ldam',
            lambda w: losses.ldam_loss(LOGITS, LABELS, class_counts=COUNTS, class_weights=w),
        ),
        (
            'balanced_softmax',
            lambda w: losses.balanced_softmax_loss(
                LOGITS, LABELS, class_counts=COUNTS, class_weights=w
            ),
        ),
        (
            'logit_adjusted',
            lambda w: losses.logit_adjusted_loss(
                LOGITS, LABELS, class_counts=COUNTS, tau=1.0, class_weights=w
            ),
        ),
        (
            'vs',
            lambda w: losses.vs_loss(
                LOGITS, LABELS, class_counts=COUNTS, gamma=0.3, tau=1.0, class_weights=w
            ),
        ),
    ],
)
def test_weighted_reduction_reaches_every_reweighted_loss(name, per_example):
  alpha = losses.adrw_weights(COUNTS, 0, switch_epoch=0, nu=0.25)
  weighted = np.asarray(per_example(alpha), np.float64)  # w_i l_i, (B,).
  w = np.asarray(alpha, np.float64)[np.asarray(LABELS)]
  for r, want in (('weight_sum', weighted.sum() / w.sum()), ('batch', weighted.mean())):
    objective = objective_of(name=name, schedule='adrw', switch_epoch=0, weighted_reduction=r)
    assert value(objective)[0] == pytest.approx(want, rel=1e-5), r


@pytest.mark.parametrize('variant', ['softmax', 'sigmoid', 'focal', 'softmax_bce'])
def test_weighted_reduction_reaches_the_class_balanced_loss(variant):
  for r in ('weight_sum', 'batch'):
    direct = losses.class_balanced_loss(
        LOGITS,
        LABELS,
        class_counts=COUNTS,
        variant=variant,
        reduction='mean',
        weighted_reduction=r,
    )
    objective = objective_of(name='class_balanced', cb_variant=variant, weighted_reduction=r)
    assert value(objective)[0] == pytest.approx(float(direct), rel=1e-6), r
  # The softmax variant's official form against numpy: sum_i w_i CE_i / B.
  if variant == 'softmax':
    w = np.asarray(losses.effective_number_weights(COUNTS, 0.9999), np.float64)[np.asarray(LABELS)]
    objective = objective_of(name='class_balanced', weighted_reduction='batch')
    assert value(objective)[0] == pytest.approx(
        (w * np_cross_entropy(LOGITS, LABELS)).mean(), rel=1e-5
    )


def test_weighted_reduction_reaches_both_stages_from_the_config(tmp_path):
  config = base.get_config()
  config.stage2.num_epochs = 1
  config.loss.update(schedule='drw', switch_epoch=0, weighted_reduction='batch')
  config.stage2.loss.update(name='class_balanced', cb_variant='sigmoid', weighted_reduction='batch')
  stage1, stage2 = train.stages.plan_stages(config, str(tmp_path))
  objectives = [
      train.stages.objective_and_schedule(stage, train_counts=COUNTS, steps_per_epoch=10)[0]
      for stage in (stage1, stage2)
  ]
  w = np.asarray(losses.effective_number_weights(COUNTS, 0.9999), np.float64)[np.asarray(LABELS)]
  assert value(objectives[0])[0] == pytest.approx(
      (w * np_cross_entropy(LOGITS, LABELS)).mean(), rel=1e-5
  )
  sigmoid = losses.class_balanced_loss(
      LOGITS, LABELS, class_counts=COUNTS, variant='sigmoid', reduction='none'
  )
  # EWB's sigmoid CB loss: the mean of the B x C weighted entries.
  assert value(objectives[1])[0] == pytest.approx(float(jnp.sum(sigmoid)) / LOGITS.size, rel=1e-6)
  # A misspelt value fails up front, naming its key.
  config.stage2.loss.weighted_reduction = 'batch_mean'
  with pytest.raises(ValueError, match="stage2.loss.weighted_reduction 'batch_mean'"):
    train.stages.plan_stages(config, str(tmp_path))
  with pytest.raises(ValueError, match="Unknown loss.weighted_reduction 'sum'"):
    objective_of(weighted_reduction='sum')


# ---------------------------------------------------------------------------
# Dot regression: the class vectors read off the head
# ---------------------------------------------------------------------------


def etf_head_with_norms(norms):
  head = heads.ETFHead(num_classes=6, train_norm=True)
  params = head.init(jax.random.PRNGKey(0), FEATURES)['params']
  params = {**params, 'norm': jnp.asarray(norms, jnp.float32)}
  return params, lambda f: head.apply({'params': params}, f)


def np_dot_regression(z, y, f, m):
  """(z_y - |f| |m_y|)^2 / (2 |f| |m_y|) per example, float64."""
  z, f, m, y = (np.asarray(a, np.float64) for a in (z, f, m, y))
  y = y.astype(int)
  s = np.linalg.norm(f, axis=1) * np.linalg.norm(m, axis=1)[y]
  return (z[np.arange(len(y)), y] - s) ** 2 / (2 * s)


@pytest.mark.parametrize('head', ['etf', 'linear'])
def test_dot_regression_reads_the_class_vectors_off_the_head(head):
  if head == 'etf':  # Trained norms r_c: the class vectors are r_c m_c, |w_c| = r_c.
    norms = np.array([0.5, 1.0, 1.5, 2.0, 0.8, 1.2])
    params, head_fn = etf_head_with_norms(norms)
    vectors = np.asarray(heads.etf_kernel(8, 6, 0), np.float64).T * norms[:, None]
  else:
    params = {**HEAD, 'bias': jnp.linspace(-0.5, 0.5, 6)}
    head_fn = lambda f: f @ params['kernel'] + params['bias']
    vectors = np.asarray(params['kernel'], np.float64).T
  logits = head_fn(FEATURES)
  per = np_dot_regression(logits, LABELS, FEATURES, vectors)
  weights = np.asarray(losses.drw_weights(COUNTS, 0, switch_epoch=0), np.float64)
  w = weights[np.asarray(LABELS)]
  cases = [
      ({}, per.mean()),  # EWB's loss_type 'DR': the plain mean.
      ({'schedule': 'drw', 'switch_epoch': 0}, (w * per).sum() / w.sum()),
      ({'schedule': 'drw', 'switch_epoch': 0, 'weighted_reduction': 'batch'}, (w * per).mean()),
  ]
  for overrides, want in cases:
    objective = objective_of(name='dot_regression', **overrides)
    loss, _ = objective(
        logits,
        LABELS,
        features=FEATURES,
        head_params=params,
        head_fn=head_fn,
        step=jnp.asarray(0),
    )
    assert float(loss) == pytest.approx(want, rel=1e-5), overrides
  # The same as the pure loss given the vectors.
  direct = losses.dot_regression_loss(
      logits, LABELS, features=FEATURES, class_vectors=vectors, reduction='mean'
  )
  assert float(direct) == pytest.approx(per.mean(), rel=1e-5)


def test_dot_regression_needs_an_affine_head_and_head_fn():
  config = base.get_config().loss
  config.name = 'dot_regression'
  with pytest.raises(ValueError, match='affine head'):
    losses.build_objective(
        config,
        COUNTS,
        steps_per_epoch=10,
        num_epochs=1,
        head='cosine',
    )
  with pytest.raises(ValueError, match='head_fn'):
    value(objective_of(name='dot_regression'))


def test_dot_regression_with_the_etf_head_trains_end_to_end(tmp_path):
  state, results = train.train_and_evaluate(
      tiny_config(
          num_train_steps=4,
          **{'loss.name': 'dot_regression', 'model.head': 'etf', 'loss.feature_norm_weight': 0.01},
      ),
      str(tmp_path),
  )
  assert int(state.step) == 4 and np.isfinite(results['accuracy'])
