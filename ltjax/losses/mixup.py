"""mixup's loss: the lambda-mixture of a loss over the two labels of each mixed image.

mixup (Zhang et al., ICLR 2018), as CC-SAM's official code trains it
(``mixup_criterion``): one lambda ~ Beta(alpha, alpha) per batch mixes image i
with image perm(i) (``ltjax.data.augment.mixup``), and the loss is

    lambda * loss(z, y) + (1 - lambda) * loss(z, y_perm).

The batch carries y_perm as 'mixup_label' and lambda as 'mixup_lambda'
(``ltjax.data.batch_keys``); the train step passes them on as ``mixup``.
"""

from typing import Callable

import jax

# (partner labels (B,), lambda (scalar)), or None when the batch is not mixed.
Mixup = tuple[jax.Array, jax.Array] | None


def mixup_loss(
    loss_of_labels: Callable[[jax.Array], jax.Array], labels: jax.Array, mixup: Mixup
) -> jax.Array:
  """lambda * loss(labels) + (1 - lambda) * loss(partner labels); loss(labels) without mixup.

  Args:
    loss_of_labels: labels -> loss (per-example or reduced: the mixture is
      linear, so it is the same either way).
    labels: (B,) the images' own labels.
    mixup: (partner labels, lambda) or None.
  """
  loss = loss_of_labels(labels)
  if mixup is None:
    return loss
  partner_labels, lam = mixup
  return lam * loss + (1 - lam) * loss_of_labels(partner_labels)
