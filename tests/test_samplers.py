"""Tests for ltjax.data.samplers: instance, class-aware and square-root sampling."""

import numpy as np
import pytest

from ltjax.data import samplers

LT_LABELS = np.repeat(np.arange(5), [100, 50, 20, 5, 1])


def test_class_aware_sampler_draws_every_class_equally_often():
  sampler = samplers.ClassAwareSampler(LT_LABELS, seed=0)
  for epoch in range(3):
    indices = sampler.epoch_indices(epoch)
    assert len(indices) == len(LT_LABELS)
    per_class = np.bincount(LT_LABELS[indices], minlength=5)
    assert per_class.max() - per_class.min() <= 1  # 176 visits over 5 classes.
    # Within a class, its cycle visits every member before repeating one.
    head = indices[LT_LABELS[indices] == 0]
    assert len(np.unique(head)) == len(head)
    tail = indices[LT_LABELS[indices] == 4]
    assert set(tail) == {175}
  np.testing.assert_array_equal(
      sampler.epoch_indices(1), samplers.ClassAwareSampler(LT_LABELS, seed=0).epoch_indices(1)
  )
  assert not np.array_equal(sampler.epoch_indices(1), sampler.epoch_indices(2))


def test_square_root_sampler_frequencies():
  sampler = samplers.PowerSampler(LT_LABELS, seed=0, power=0.5)
  draws = np.concatenate([sampler.epoch_indices(e) for e in range(200)])
  freq = np.bincount(LT_LABELS[draws], minlength=5) / len(draws)
  expected = np.sqrt([100, 50, 20, 5, 1]) / np.sqrt([100, 50, 20, 5, 1]).sum()
  np.testing.assert_allclose(freq, expected, atol=0.01)
  instance = samplers.InstanceSampler(LT_LABELS, seed=0).epoch_indices(0)
  np.testing.assert_array_equal(np.sort(instance), np.arange(len(LT_LABELS)))
  with pytest.raises(ValueError, match="valid: \\('instance'"):
    samplers.build_sampler("balanced", LT_LABELS, seed=0)
