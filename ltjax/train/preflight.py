"""A stage's training step traced with abstract values: the model as configured, checked early.

``trace_train_step`` builds what ``ltjax.train.loop.run_stage`` builds -- the
model at its configured width and input size, the objective, the schedule, the
optimiser with its trainable regex, SAM / CC-SAM, MaxNorm -- and traces one
training step with ``jax.eval_shape``: shapes, dtypes, parameter names and
head constraints are checked without compiling or running anything, in seconds
even for a ResNet-152 at 224 px. A mismatch (an ETF head wider than the
features, a trainable regex that matches no parameter, a CC-SAM head that is
not linear) raises the error the real run would raise after loading its data.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ltjax import models
from ltjax import optim
from ltjax.data import pipeline
from ltjax.data.batch_keys import FLIP
from ltjax.data.batch_keys import IMAGE
from ltjax.data.batch_keys import JITTER_FACTORS
from ltjax.data.batch_keys import JITTER_OPS
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MIXUP_LABEL
from ltjax.data.batch_keys import MIXUP_LAMBDA
from ltjax.param_paths import named_leaves
from ltjax.param_paths import path_mask
from ltjax.train import stages
from ltjax.train.stages import Stage
from ltjax.train.state import state_from_variables
from ltjax.train.steps import train_step


def device_augmented(config) -> bool:
  return pipeline.device_augmented(
      config.data.augment, config.data.mixup_alpha, config.data.device_augment
  )


def abstract_batch(config, image_shape: tuple[int, ...]) -> dict[str, jax.ShapeDtypeStruct]:
  """The shapes and dtypes of one global training batch of ``config``."""
  b = config.batch_size
  batch = {
      IMAGE: jax.ShapeDtypeStruct((b, *image_shape), jnp.float32),
      LABEL: jax.ShapeDtypeStruct((b,), jnp.int32),
  }
  if device_augmented(config):  # uint8 crops and their draws (ltjax.data.device_augment).
    n = pipeline.jitter_transforms(config.data.augment)
    batch[IMAGE] = jax.ShapeDtypeStruct((b, *image_shape), jnp.uint8)
    batch[FLIP] = jax.ShapeDtypeStruct((b,), jnp.bool_)
    batch[JITTER_OPS] = jax.ShapeDtypeStruct((b, n), jnp.int32)
    batch[JITTER_FACTORS] = jax.ShapeDtypeStruct((b, n), jnp.float32)
  if config.data.mixup_alpha > 0:
    batch[MIXUP_LABEL] = jax.ShapeDtypeStruct((b,), jnp.int32)
    batch[MIXUP_LAMBDA] = jax.ShapeDtypeStruct((b,), jnp.float32)
  return batch


def trace_train_step(
    stage: Stage,
    *,
    train_counts: np.ndarray,
    image_shape: tuple[int, ...],
    steps_per_epoch: int,
    step: bool = True,
) -> dict[str, jax.ShapeDtypeStruct] | None:
  """Traces one training step of ``stage``; returns the abstract metrics.

  ``step=False`` only traces the model's initialisation and checks the
  trainable regex against its parameters (returns None): for a stage whose
  step is about to be compiled anyway, where a second trace would only cost time.

  Args:
    stage: the stage (its config is read; nothing is written to its workdir).
    train_counts: training images per class (the objective's class statistics).
    image_shape: (H, W, C) of a training image as the pipeline delivers it.
    steps_per_epoch: of the stage's training batches (schedules, SAM radii, MaxNorm).

  Raises:
    ValueError: the stage's trainable regex matches no parameter, or the model,
      objective or optimiser rejects the configuration.
  """
  config = stage.config
  num_classes = len(train_counts)
  model = models.build_model(config.model, num_classes, dtype=models.DTYPES[config.dtype])
  objective, schedule = stages.objective_and_schedule(
      stage, train_counts=np.asarray(train_counts), steps_per_epoch=steps_per_epoch
  )

  def init(rng):
    return model.init({'params': rng}, jnp.zeros((1, *image_shape)), train=False)

  abstract_params = jax.eval_shape(init, jax.random.PRNGKey(0))['params']
  if stage.trainable is not None and not any(
      trains for _, trains in named_leaves(path_mask(abstract_params, stage.trainable))
  ):
    names = [name for name, _ in named_leaves(abstract_params)]
    raise ValueError(
        f'{stage.name}: the trainable regex {stage.trainable!r} matches no parameter of '
        f'model.name={config.model.name!r}; its parameters are named like {names[:3]} ... '
        f'{names[-2:]}.'
    )
  if not step:
    return None
  head_only = stages.trains_head_only(stage, abstract_params)

  def step(rng, batch):
    variables = init(rng)
    params = variables['params']
    # A stage-2 source has the same tree as these parameters (MaxNorm's thresholds).
    tx = stages.optimizer(stage, schedule, steps_per_epoch=steps_per_epoch, initial_params=params)
    state = state_from_variables(variables, model.apply, tx, rng)
    return train_step(
        state,
        batch,
        objective=objective,
        train_bn=stage.train_bn,
        sam=optim.uses_sam(config),
        sam_batch_norm=config.sam.batch_norm_statistics,
        head_only=head_only,
        # Any (mean, std) traces the same; the values are the data set's at run time.
        input_stats=((0.5,) * image_shape[-1], (0.25,) * image_shape[-1]),
    )[1]

  return jax.eval_shape(step, jax.random.PRNGKey(0), abstract_batch(config, image_shape))
