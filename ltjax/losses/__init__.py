"""Loss functions: pure functions of (logits, labels, *, class statistics).

``build_loss`` maps ``config.loss.name`` through an explicit table to a
function ``loss_fn(logits, labels) -> scalar``, the batch loss with the class
statistics of the training set bound in (reduced with each loss's own
convention, e.g. PyTorch's weighted mean for class-weighted losses).
"""

import functools
from typing import Callable

import ml_collections
import numpy as np

from ltjax.losses.cross_entropy import softmax_cross_entropy

LossFn = Callable  # (logits (B, C), labels (B,)) -> scalar batch loss


def _cross_entropy(loss_config: ml_collections.ConfigDict, class_counts: np.ndarray) -> LossFn:
  del class_counts  # Plain CE uses no class statistics.
  return functools.partial(softmax_cross_entropy,
                           label_smoothing=loss_config.label_smoothing,
                           reduction='mean')


# name -> builder(loss_config, class_counts) -> LossFn
LOSSES: dict[str, Callable[..., LossFn]] = {
    'cross_entropy': _cross_entropy,
}


def build_loss(loss_config: ml_collections.ConfigDict, class_counts: np.ndarray) -> LossFn:
  if loss_config.name not in LOSSES:
    raise ValueError(f'Unknown loss.name {loss_config.name!r}; valid: {sorted(LOSSES)}.')
  return LOSSES[loss_config.name](loss_config, np.asarray(class_counts))
