"""Tests for ltjax.losses.adversarial: CC-SAM stage 2's class-conditional adversarial features."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltjax import losses
from ltjax.losses import adversarial

COUNTS = np.array([500, 200, 80, 30, 10, 3])
RNG = np.random.default_rng(0)
RNG.normal(0, 3, (12, 6))  # Skip the logits: the same data as in test_objective.py.
LABELS = jnp.asarray(RNG.integers(0, 6, 12))
FEATURES = jnp.asarray(RNG.normal(0, 1, (12, 8)), jnp.float32)
HEAD = {'kernel': jnp.asarray(RNG.normal(0, 1, (8, 6)), jnp.float32), 'bias': jnp.zeros(6)}


def test_adversarial_features_match_the_official_per_class_loop():
  kernel, bias = HEAD['kernel'], jnp.linspace(-1, 1, 6)
  head_fn = lambda f: f @ kernel + bias
  labels = LABELS.at[0].set(5)  # Make sure the rarest class (n = 3) is present.
  got = adversarial.adversarial_feature_losses(
      FEATURES, labels, head_fn, class_counts=COUNTS, weight=1.0, div=2.0
  )
  w = np.log(COUNTS.max() / COUNTS + 0.01) / 2
  expected = np.zeros(len(labels))
  for c in np.unique(np.asarray(labels)):  # The official code: one backward per class.
    members = np.asarray(labels) == c
    class_loss = (
        lambda f: jnp.sum(jnp.where(members, losses.softmax_cross_entropy(head_fn(f), labels), 0.0))
        / members.sum()
    )
    g = jax.grad(class_loss)(FEATURES)
    perturbed = FEATURES + 1.0 * w[c] * g / jnp.linalg.norm(g)
    per = w[c] * losses.softmax_cross_entropy(head_fn(perturbed), labels)
    expected[members] = np.asarray(per)[members]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  assert w[0] == pytest.approx(np.log(1.01) / 2)
  np.testing.assert_allclose(
      [float(adversarial.adversarial_mix(e, total_epochs=30, cap=0.3)) for e in (0, 5, 8, 29)],
      [1 / 30, 0.2, 0.3, 0.3],
      rtol=1e-6,
  )
