"""The explicit training state and its creation, directly sharded.

``create_train_state`` follows big_vision: shapes from ``jax.eval_shape`` of the
init function, then ``jax.jit(init, out_shardings=...)`` materialises the state
replicated over the mesh without a host round trip.
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from ltjax.train import sharding


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training, as one pytree.

  Attributes:
    step: number of optimiser steps taken (int32 scalar).
    params: model parameters ({'backbone': ..., 'head': ...}).
    batch_stats: BatchNorm running statistics (empty dict without BN).
    opt_state: the optax state of ``tx``.
    rng: base PRNG key of the training randomness, saved and restored with the
      state (the data pipeline's randomness is a function of (seed, step)).
    apply_fn, tx: static (not part of the pytree).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def state_from_variables(variables, apply_fn, tx: optax.GradientTransformation, rng) -> TrainState:
  """The state at step 0 of a model's initial ``variables`` (its optimiser state fresh)."""
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      rng=rng,
      apply_fn=apply_fn,
      tx=tx,
  )


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    *,
    input_shape: tuple[int, ...],
    seed: int,
    mesh: Mesh,
) -> TrainState:
  """Initialises parameters and optimiser state, replicated on ``mesh``.

  Args:
    input_shape: shape of one image, (H, W, C).
    seed: initialisation and training randomness derive from it.
  """
  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))

  def init(init_rng, train_rng):
    variables = model.init({'params': init_rng}, jnp.zeros((1, *input_shape)), train=False)
    return state_from_variables(variables, model.apply, tx, train_rng)

  abstract = jax.eval_shape(init, init_rng, train_rng)
  state_sharding = sharding.replicated_like(abstract, mesh)
  return jax.jit(init, out_shardings=state_sharding)(init_rng, train_rng)
