"""ltjax: long-tailed image recognition in JAX/Flax.

Subpackages follow the one-way data flow of the library:

  data    long-tail profiles, sources, batching and augmentation
  models  backbones (images -> features) and classifier heads (features -> logits)
  losses  pure loss functions of (logits, labels, *, class statistics)
  optim   optax transforms and learning-rate schedules
  train   TrainState, the jitted train/eval steps, the loop and checkpoints
  eval    metrics and plots
"""

__version__ = "0.1.0"
