"""Tests for ltjax.losses.mixup: mixup_loss against its formula, with and without jit."""

import chex
import jax
import jax.numpy as jnp
import numpy as np

from configs import base
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.losses.mixup import mixup_loss
from ltjax.train import sharding

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(size=(8, 5)).astype(np.float32)
LABELS = RNG.integers(0, 5, 8).astype(np.int32)
PARTNERS = RNG.permutation(LABELS)


def picked_logit_squared(labels):
  """A per-example loss that is not linear in the labels: z[i, y_i]^2."""
  return jnp.take_along_axis(jnp.asarray(LOGITS), labels[:, None], axis=1)[:, 0] ** 2


class MixupLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_mixup_loss_is_the_lambda_mixture_of_the_two_labels(self):
    loss = self.variant(lambda y, partner, lam: mixup_loss(picked_logit_squared, y, (partner, lam)))
    got = loss(LABELS, PARTNERS, jnp.float32(0.3))
    picked = lambda y: LOGITS[np.arange(8), y].astype(np.float64) ** 2
    np.testing.assert_allclose(got, 0.3 * picked(LABELS) + 0.7 * picked(PARTNERS), rtol=1e-6)
    # The mixture is linear: mixing reduced losses is reducing the mixed losses.
    mean = self.variant(
        lambda y, partner, lam: mixup_loss(
            lambda labels: jnp.mean(picked_logit_squared(labels)), y, (partner, lam)
        )
    )
    np.testing.assert_allclose(mean(LABELS, PARTNERS, jnp.float32(0.3)), np.mean(got), rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_without_mixup_it_is_the_plain_loss(self):
    loss = self.variant(lambda y: mixup_loss(picked_logit_squared, y, None))
    np.testing.assert_array_equal(loss(LABELS), picked_logit_squared(jnp.asarray(LABELS)))
    # lambda = 1 mixes in nothing of the partner.
    full = self.variant(
        lambda y, partner: mixup_loss(picked_logit_squared, y, (partner, jnp.float32(1.0)))
    )
    np.testing.assert_allclose(full(LABELS, PARTNERS), LOGITS[np.arange(8), LABELS] ** 2, rtol=1e-6)


def test_train_step_mixes_the_loss_of_a_mixup_batch():
  mesh = sharding.make_mesh(jax.devices()[:1])
  config = base.get_config()
  model = models.build_model(config.model, 10)
  tx = optim.torch_sgd(0.0, momentum=0.0)
  state = train.create_train_state(model, tx, input_shape=(28, 28, 1), seed=0, mesh=mesh)
  loss_fn = lambda z, y: losses.softmax_cross_entropy(z, y, reduction='mean')
  rng = np.random.default_rng(0)
  batch = {
      'image': rng.normal(size=(8, 28, 28, 1)).astype(np.float32),
      'label': rng.integers(0, 10, 8).astype(np.int32),
      'mixup_label': rng.integers(0, 10, 8).astype(np.int32),
      'mixup_lambda': np.full(8, 0.3, np.float32),
  }
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  (logits, _), _ = state.apply_fn(variables, batch['image'], train=True, mutable=['batch_stats'])
  expected = 0.3 * loss_fn(logits, batch['label']) + 0.7 * loss_fn(logits, batch['mixup_label'])
  step = train.make_train_step(
      state,
      mesh,
      objective=losses.build_objective(config.loss, np.ones(10), steps_per_epoch=10, num_epochs=1),
  )
  _, metrics = step(state, sharding.to_global(batch, mesh))
  np.testing.assert_allclose(metrics['loss'], expected, rtol=1e-5)
