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
