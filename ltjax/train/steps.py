"""The train and eval steps: pure functions, jitted once with explicit shardings.

``train_step(state, batch) -> (state, metrics)`` runs the forward pass in train
mode (BatchNorm uses batch statistics and updates its running averages), the
objective (loss + regularisers, with epoch schedules evaluated at
``state.step``), one backward pass and the optax update. ``make_train_step``
binds the static dependencies (the objective) and jits it with the state
donated, so the old parameters' buffers are reused for the new ones.
"""

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ltjax import optim
from ltjax.data import device_augment
from ltjax.data.batch_keys import FEATURES
from ltjax.data.batch_keys import IMAGE
from ltjax.data.batch_keys import LABEL
from ltjax.data.batch_keys import MIXUP_LABEL
from ltjax.data.batch_keys import MIXUP_LAMBDA
from ltjax.losses.mixup import Mixup
from ltjax.train import sharding
from ltjax.train.state import TrainState


def backbone_method(model, x, *, train: bool):
  """``apply_fn(..., method=backbone_method)``: the features of ``x``."""
  return model.backbone(x, train=train)


def head_method(model, features):
  """``apply_fn(..., method=head_method)``: the head's logits of ``features``."""
  return model.head(features)


def affine_head(
    state: TrainState, feature_dim: int, rtol: float = 1e-4
) -> tuple[np.ndarray, np.ndarray] | None:
  """(kernel (D, C), bias (C,)) with head(f) = f W + b, or None if the head is not affine.

  Linear, LWS, tau-norm and ETF heads are affine in the features; W and b are
  read off the head itself (b = head(0), W = head(I) - b), so the diagnostics
  see the classifier that produces the logits, scales and normalisations
  included (LWR's head is linear too; its projection MLP only enters the
  loss). A cosine head normalises the features, so it is not affine: None.
  """
  # Full float32 products: GPUs' default TF32 matmuls would fail the check.
  head = jax.jit(lambda f: state.apply_fn({'params': state.params}, f, method=head_method))
  probe = jnp.concatenate([jnp.zeros((1, feature_dim)), jnp.eye(feature_dim)])
  check = np.random.default_rng(0).normal(size=(4, feature_dim)).astype(np.float32)
  with jax.default_matmul_precision('float32'):
    out = np.asarray(head(probe), np.float64)
    actual = np.asarray(head(jnp.asarray(check)), np.float64)
  bias, kernel = out[0], out[1:] - out[:1]
  expected = check.astype(np.float64) @ kernel + bias
  if not np.allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max()):
    return None
  return kernel, bias


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    objective: Callable,
    train_bn: bool = True,
    sam: bool = False,
    sam_batch_norm: str = 'clean_pass',
    head_only: bool = False,
    input_stats: tuple | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimiser step on a (global) batch {'image': (B,H,W,C), 'label': (B,)}.

  A batch of uint8 crops with their flip and jitter draws
  (``data.device_augment``) is first augmented and normalised here
  (``ltjax.data.device_augment``) with ``input_stats`` = (mean, std).

  A mixup batch (``ltjax.data.augment.mixup``) also carries 'mixup_label' (the
  partner's label) and 'mixup_lambda' (lambda, repeated per example); its loss
  is lambda * loss(y) + (1 - lambda) * loss(y_partner) (``ltjax.losses.mixup``).
  The keys are ``ltjax.data.batch_keys``.

  ``train_bn=False`` runs BatchNorm in inference mode (running statistics, not
  updated): a frozen backbone in classifier re-training.

  ``sam=True``: ``state.tx`` is ``ltjax.optim.sam(...)``; it receives the
  gradient of the same objective on the same batch as ``grad_fn`` and calls it
  at the perturbed parameters. ``sam_batch_norm`` ('clean_pass', as Google's
  Flax SAM): BatchNorm running statistics come from the clean pass only; the
  perturbed pass's are discarded. 'both_passes' (the PyTorch ports, davda54's
  SAM in DDC and Saddle, where both forward passes run in train mode): the
  perturbed pass updates the clean pass's statistics once more.

  ``head_only=True`` (only head parameters train): no gradient flows into the
  backbone, which saves its backward pass; the updates are those of the full
  backward pass with the backbone frozen. A batch with 'features' instead of
  'image' (``ltjax.train.feature_cache``) skips the backbone altogether.
  """

  if device_augment.KEYS[0] in batch:
    if input_stats is None:
      raise ValueError('A device-augmented batch needs input_stats=(mean, std).')
    batch = device_augment.apply(batch, *input_stats)

  def compute_loss(params, batch_stats=state.batch_stats):
    variables = {'params': params, 'batch_stats': batch_stats}
    head_fn = lambda f: state.apply_fn({'params': params}, f, method=head_method)
    new_vars = {'batch_stats': batch_stats}
    if FEATURES in batch:  # Cached features of the frozen backbone.
      features = batch[FEATURES]
    elif head_only:
      if train_bn:
        features, new_vars = state.apply_fn(
            variables, batch[IMAGE], train=True, method=backbone_method, mutable=['batch_stats']
        )
      else:
        features = state.apply_fn(variables, batch[IMAGE], train=False, method=backbone_method)
      features = jax.lax.stop_gradient(features)
    elif train_bn:
      (logits, features), new_vars = state.apply_fn(
          variables, batch[IMAGE], train=True, mutable=['batch_stats']
      )
    else:
      logits, features = state.apply_fn(variables, batch[IMAGE], train=False)
    if FEATURES in batch or head_only:
      logits = head_fn(features).astype(jnp.float32)  # As models.Classifier.
    mixup: Mixup = None
    if MIXUP_LABEL in batch:
      mixup = (batch[MIXUP_LABEL], jnp.mean(batch[MIXUP_LAMBDA]))
    loss, loss_metrics = objective(
        logits,
        batch[LABEL],
        features=features,
        head_params=params['head'],
        head_fn=head_fn,
        step=state.step,
        mixup=mixup,
    )
    return loss, (new_vars['batch_stats'], logits, loss_metrics)

  (loss, (batch_stats, logits, loss_metrics)), grads = jax.value_and_grad(
      compute_loss, has_aux=True
  )(state.params)
  if sam:
    if sam_batch_norm not in optim.SAM_BATCH_NORM_STATISTICS:
      raise ValueError(
          f'Unknown sam_batch_norm {sam_batch_norm!r}; valid: {optim.SAM_BATCH_NORM_STATISTICS}.'
      )
    perturbed_stats = []  # The perturbed pass's statistics, read back below (same trace).

    def grad_fn(perturbed):
      if sam_batch_norm == 'clean_pass':
        return jax.grad(compute_loss, has_aux=True)(perturbed)[0]
      adv_grads, (stats, _, _) = jax.grad(compute_loss, has_aux=True)(perturbed, batch_stats)
      perturbed_stats.append(stats)
      return adv_grads

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
    if perturbed_stats:
      batch_stats = perturbed_stats[-1]
  else:
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      **loss_metrics,
      'loss': loss,
      'train_accuracy': jnp.mean(jnp.argmax(logits, -1) == batch[LABEL]),
      'grad_norm': optax.tree.norm(grads),
      'param_norm': optax.tree.norm(params),
  }
  new_state = state.replace(
      step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  )
  return new_state, metrics


# eval_step's logits of the unflipped images beside flip-averaged 'logits' (single_view=True).
SINGLE_VIEW_LOGITS = 'single_view_logits'


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    flip_tta: bool = False,
    single_view: bool = False,
) -> dict[str, jax.Array]:
  """Logits and features in inference mode (BatchNorm running statistics).

  With ``flip_tta`` the logits are the mean of logits(x) and logits(hflip(x)),
  as the weight-balancing and LORT evaluations report (features of x only);
  ``single_view`` also returns logits(x) as SINGLE_VIEW_LOGITS (no extra pass).
  """
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  logits, features = state.apply_fn(variables, batch[IMAGE], train=False)
  out = {'features': features}
  if flip_tta and single_view:
    out[SINGLE_VIEW_LOGITS] = logits
  if flip_tta:
    flipped, _ = state.apply_fn(variables, batch[IMAGE][:, :, ::-1], train=False)
    logits = (logits + flipped) / 2
  return {'logits': logits, **out}


# XLA:CPU (jaxlib 0.10) hands convolutions with more than 16 channels to
# YNNPACK, whose weight-gradient kernels run up to 15x slower than XLA's Eigen
# convolutions; keeping YNNPACK for dots and reductions only halves a ResNet-32
# CPU step (benchmarks/README.md). Setting the option in XLA_FLAGS yourself, or
# LTJAX_XLA_CPU_DEFAULTS=0, keeps XLA's own choice.
_YNN_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
_YNN_WITHOUT_CONVOLUTIONS = 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'


@functools.cache
def _compiles_with(device, option: str, value: str) -> bool:
  """Whether this jaxlib knows the compile option (unknown ones are errors)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(
        jax.device_put(np.float32(0), device)
    ).compile()
    return True
  except Exception:  # pylint: disable=broad-except
    return False


def compiler_options(mesh: Mesh) -> dict[str, str] | None:
  """XLA options for the train/eval steps on ``mesh``'s platform (None: XLA's defaults)."""
  device = mesh.devices.flat[0]
  if (
      device.platform != 'cpu'
      or _YNN_OPTION in os.environ.get('XLA_FLAGS', '')
      or os.environ.get('LTJAX_XLA_CPU_DEFAULTS', '1') == '0'
  ):
    return None
  if not _compiles_with(device, _YNN_OPTION, _YNN_WITHOUT_CONVOLUTIONS):
    return None
  return {_YNN_OPTION: _YNN_WITHOUT_CONVOLUTIONS}


def make_train_step(
    state: TrainState,
    mesh: Mesh,
    *,
    objective: Callable,
    train_bn: bool = True,
    sam: bool = False,
    sam_batch_norm: str = 'clean_pass',
    head_only: bool = False,
    input_stats: tuple | None = None,
):
  """Jits ``train_step`` for ``mesh``: state replicated and donated, batch sharded.

  ``objective``: ``ltjax.losses.build_objective`` (or ``simple_objective``).
  ``input_stats``: (mean, std) of the images, for device-augmented batches.
  """
  state_sharding = sharding.replicated_like(state, mesh)
  if input_stats is not None:  # Hashable constants of the jitted function.
    input_stats = tuple(tuple(float(v) for v in stat) for stat in input_stats)
  return jax.jit(
      functools.partial(
          train_step,
          objective=objective,
          train_bn=train_bn,
          sam=sam,
          sam_batch_norm=sam_batch_norm,
          head_only=head_only,
          input_stats=input_stats,
      ),
      in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
      out_shardings=(state_sharding, sharding.replicated(mesh)),
      donate_argnums=(0,),
      compiler_options=compiler_options(mesh),
  )


def make_eval_step(
    state: TrainState, mesh: Mesh, *, flip_tta: bool = False, single_view: bool = False
):
  """Jits ``eval_step`` for ``mesh``; outputs stay sharded on the batch axis.

  A predict step for ``ltjax.train.predict``.
  """
  return jax.jit(
      functools.partial(eval_step, flip_tta=flip_tta, single_view=single_view),
      in_shardings=(sharding.replicated_like(state, mesh), sharding.batch_sharded(mesh)),
      out_shardings=sharding.batch_sharded(mesh),
      compiler_options=compiler_options(mesh),
  )
