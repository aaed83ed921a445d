"""SGD with momentum and coupled weight decay, exactly as ``torch.optim.SGD``.

PyTorch (dampening 0):   g <- g + wd * theta;  buf <- mu * buf + g;
                         d = g + mu * buf if nesterov else buf;
                         theta <- theta - lr * d.
optax: ``chain(add_decayed_weights(wd, mask), sgd(lr, mu, nesterov))``, whose
trace is the same buffer (it stores buf, not lr * buf), so a changing lr is
applied to the whole buffer as in PyTorch. PyTorch decays every parameter it
is given (BN scales and biases included); ``weight_decay_mask`` makes the set
explicit.
"""

import optax


def torch_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    weight_decay_mask=None,
) -> optax.GradientTransformation:
  """PyTorch-equivalent SGD. ``weight_decay_mask``: pytree/callable of bools, None = all."""
  decay = optax.add_decayed_weights(weight_decay, mask=weight_decay_mask)
  return optax.chain(decay, optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov))
