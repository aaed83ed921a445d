"""The training objective: a classification loss, its schedule and the added terms.

``build_objective`` assembles the objective of a config from explicit tables:

  LOSSES     config.loss.name      -> the classification loss
  SCHEDULES  config.loss.schedule  -> class re-weighting / TLA over the epochs
  regularisers                     -> FR (loss.feature_norm_weight) and LWR
                                      (loss.lwr_weight, with lambda(t))
  CC-SAM stage 1                   -> the class-conditional flat loss (config.cc_sam,
                                      ``cc_sam.py``; CC_SAM_IMPLEMENTATIONS)
  CC-SAM stage 2                   -> adversarial features (loss.adversarial_weight,
                                      ``adversarial.py``)

The objective is ``objective(logits, labels, *, features, head_params, head_fn,
step, mixup=None) -> (loss, metrics)``; the train step calls it inside the
gradient (``head_fn`` maps features to logits with the live parameters; ``mixup``
is ``(partner labels, lambda)`` of a mixed batch, see ``mixup.py``).

Class weights (the schedules' DRW / ADRW weights, the class-balanced loss's own)
reduce over the batch by ``loss.weighted_reduction`` (``WEIGHTED_REDUCTIONS``,
cross_entropy.py): 'weight_sum' = sum_i w_i l_i / sum_i w_i (PyTorch), 'batch' =
sum_i w_i l_i / B (the official CB_loss; class_balanced.py for its variants).

The dot-regression loss (``dot_regression.py``) also needs the features and the
classifier's class vectors; those are read off the head as W = head(I) - head(0),
which holds for every affine head (linear, LWS, tau-norm, ETF, LWR), not the
cosine head.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ltjax.losses import cc_sam
from ltjax.losses.adversarial import adversarial_feature_losses
from ltjax.losses.adversarial import adversarial_mix
from ltjax.losses.class_balanced import class_balanced_loss
from ltjax.losses.cross_entropy import WEIGHTED_REDUCTIONS
from ltjax.losses.cross_entropy import softmax_cross_entropy
from ltjax.losses.dot_regression import dot_regression_loss
from ltjax.losses.focal import focal_loss
from ltjax.losses.logit_adjusted import balanced_softmax_loss
from ltjax.losses.logit_adjusted import ldam_loss
from ltjax.losses.logit_adjusted import logit_adjusted_loss
from ltjax.losses.logit_adjusted import vs_loss
from ltjax.losses.mixup import mixup_loss
from ltjax.losses.regularizers import feature_norm_regularizer
from ltjax.losses.regularizers import lwr_regularizer
from ltjax.losses.retargeting import lort_loss
from ltjax.losses.schedules import adrw_weights
from ltjax.losses.schedules import drw_weights
from ltjax.losses.schedules import lwr_lambda
from ltjax.losses.schedules import tla_gamma
from ltjax.models import heads

# (logits, labels, class_weights or None, epoch, reduction) -> per-example losses ('none',
# each multiplied by its class weight) or their PyTorch-weighted 'mean'; a geometric loss
# also takes the keywords features and class_vectors.
BaseLoss = Callable[..., jax.Array]


class _Loss(NamedTuple):
  build: Callable[[ml_collections.ConfigDict, np.ndarray], BaseLoss]
  reweightable: bool  # Accepts class weights (DRW/ADRW).
  geometric: bool = False  # Needs the features and the head's class vectors (DR).


def _ce(c, counts):
  del counts
  return lambda z, y, w, epoch, r: softmax_cross_entropy(
      z, y, label_smoothing=c.label_smoothing, class_weights=w, reduction=r
  )


def _focal(c, counts):
  del counts
  return lambda z, y, w, epoch, r: focal_loss(
      z, y, gamma=c.focal_gamma, class_weights=w, reduction=r
  )


def _class_balanced(c, counts):
  # Its own weights: the 'batch' normaliser of each variant is class_balanced_loss's.
  return lambda z, y, w, epoch, r: class_balanced_loss(
      z,
      y,
      class_counts=counts,
      beta=c.cb_beta,
      variant=c.cb_variant,
      gamma=c.focal_gamma,
      reduction=r,
      weighted_reduction=c.weighted_reduction,
  )


def _ldam(c, counts):
  return lambda z, y, w, epoch, r: ldam_loss(
      z,
      y,
      class_counts=counts,
      max_margin=c.ldam_max_margin,
      scale=c.ldam_scale,
      class_weights=w,
      reduction=r,
  )


def _balanced_softmax(c, counts):
  del c
  return lambda z, y, w, epoch, r: balanced_softmax_loss(
      z, y, class_counts=counts, class_weights=w, reduction=r
  )


def _logit_adjusted(c, counts):
  return lambda z, y, w, epoch, r: logit_adjusted_loss(
      z, y, class_counts=counts, tau=c.la_tau, class_weights=w, reduction=r
  )


def _vs(c, counts):
  def loss(z, y, w, epoch, r):
    gamma = c.vs_gamma
    if c.schedule in TLA_SCHEDULES:  # Truncated LA: beta -> 1 after the switch.
      gamma = tla_gamma(gamma, epoch, switch_epoch=c.switch_epoch)
    return vs_loss(
        z, y, class_counts=counts, gamma=gamma, tau=c.vs_tau, class_weights=w, reduction=r
    )

  return loss


def _lort(c, counts):
  del counts
  return lambda z, y, w, epoch, r: lort_loss(z, y, delta=c.lort_delta, reduction=r)


def _dot_regression(c, counts):
  del c, counts
  return lambda z, y, w, epoch, r, *, features, class_vectors: dot_regression_loss(
      z, y, features=features, class_vectors=class_vectors, class_weights=w, reduction=r
  )


LOSSES: dict[str, _Loss] = {
    'cross_entropy': _Loss(_ce, True),
    'focal': _Loss(_focal, True),
    'class_balanced': _Loss(_class_balanced, False),
    'ldam': _Loss(_ldam, True),
    'balanced_softmax': _Loss(_balanced_softmax, True),
    'logit_adjusted': _Loss(_logit_adjusted, True),
    'vs': _Loss(_vs, True),
    'lort': _Loss(_lort, False),
    'dot_regression': _Loss(_dot_regression, True, geometric=True),
}
# Heads whose logits are not affine in the features: no class vectors to read off.
NON_AFFINE_HEADS = ('cosine',)

# config.loss.schedule -> class weights as a function of (counts, epoch, loss config);
# None = no re-weighting. 'tla' changes the VS loss itself (see _vs).
SCHEDULES: dict[str, Callable | None] = {
    'none': None,
    'drw': lambda counts, epoch, c: drw_weights(
        counts, epoch, switch_epoch=c.switch_epoch, beta=c.drw_beta
    ),
    'adrw': lambda counts, epoch, c: adrw_weights(
        counts, epoch, switch_epoch=c.switch_epoch, nu=c.adrw_nu
    ),
    'tla': None,
    # DDC's VS + TLA + DRW: TLA on the VS loss and DRW's effective-number weights after the switch.
    'drw_tla': lambda counts, epoch, c: drw_weights(
        counts, epoch, switch_epoch=c.switch_epoch, beta=c.drw_beta
    ),
    'adrw_tla': lambda counts, epoch, c: adrw_weights(
        counts, epoch, switch_epoch=c.switch_epoch, nu=c.adrw_nu
    ),
}
# The schedules that also truncate the VS loss's multiplicative adjustment (TLA).
TLA_SCHEDULES = ('tla', 'drw_tla', 'adrw_tla')
# config.loss.lwr_schedule: LWR's weight over training.
LWR_SCHEDULES = ('decay', 'constant')


def _affine_class_vectors(head_fn, feature_dim: int) -> jax.Array:
  """(C, d) class vectors of an affine head f -> f W + b: the rows of (head(I) - head(0))^T.

  Read off the head, so they are the vectors that make the logits (the ETF's
  r_c m_c, LWS's scaled columns) whatever its parameters are; constant for the
  gradient (the loss only takes their norms, detached).
  """
  probe = jnp.concatenate([jnp.zeros((1, feature_dim)), jnp.eye(feature_dim)])
  with jax.default_matmul_precision('float32'):  # Not TF32: the norms are the loss's target.
    out = jax.lax.stop_gradient(head_fn(probe).astype(jnp.float32))
  return (out[1:] - out[:1]).T


def _classifier_vectors(head_params) -> jax.Array:
  """(C, k) class vectors for LWR: projected by the LWR head's MLP, else W's columns."""
  if 'projection' in head_params:
    return heads.lwr_projected_weights(head_params)
  return head_params['kernel'].T


# config.cc_sam.implementation -> CC-SAM's flat loss of a linear head.
CC_SAM_IMPLEMENTATIONS = {
    'closed_form': cc_sam.head_flat_loss,
    'vmap': cc_sam.head_flat_loss_vmap,
}


def _cc_sam_flat_loss(cc: ml_collections.ConfigDict, counts: np.ndarray):
  """(logits, labels, features, head_params, mixup, step) -> (flat loss, metrics) of CC-SAM.

  With ``cc_sam.direction='random'`` the directions of step s are drawn from
  ``fold_in(PRNGKey(0), s)``: a function of the step, so a resumed run repeats
  an uninterrupted one.
  """
  if cc.implementation not in CC_SAM_IMPLEMENTATIONS:
    raise ValueError(
        f'Unknown cc_sam.implementation {cc.implementation!r}; valid: '
        f'{sorted(CC_SAM_IMPLEMENTATIONS)}.'
    )
  if cc.direction != 'gradient' and cc.implementation != 'closed_form':
    raise ValueError(
        f'cc_sam.direction={cc.direction!r} is implemented in the closed form only; set '
        "cc_sam.implementation='closed_form'."
    )
  flat_loss = CC_SAM_IMPLEMENTATIONS[cc.implementation]

  def compute(logits, labels, features, head_params, mixup, step):
    def clean_per_example(z):  # The official code's (mixup-mixed) CE, grouped by y.
      return mixup_loss(lambda y: softmax_cross_entropy(z, y), labels, mixup)

    kwargs = {}
    if cc.implementation == 'closed_form':
      kwargs = {'logits': logits, 'direction': cc.direction}
      if cc.direction == 'random':
        kwargs['key'] = jax.random.fold_in(jax.random.PRNGKey(0), step)
    return flat_loss(
        features,
        labels,
        head_params,
        clean_per_example,
        class_counts=counts,
        noise_ratio=cc.noise_ratio,
        radius=cc.radius,
        rho=cc.rho or None,
        **kwargs,
    )

  return compute


def build_objective(
    loss_config: ml_collections.ConfigDict,
    class_counts: np.ndarray,
    *,
    steps_per_epoch: int,
    num_epochs: float,
    cc_sam_config: ml_collections.ConfigDict | None = None,
    head: str = 'linear',
):
  """The training objective of ``config.loss`` with the class counts bound in.

  ``cc_sam_config`` (``config.cc_sam``) with ``flat_ratio > 0`` adds CC-SAM's
  stage-1 flat loss: loss = (1 - flat_ratio) * loss + flat_ratio * flat; it
  perturbs a linear classifier, so ``head`` (``config.model.head``) must be
  'linear'.
  """
  c = loss_config
  if c.name not in LOSSES:
    raise ValueError(f'Unknown loss.name {c.name!r}; valid: {sorted(LOSSES)}.')
  if c.schedule not in SCHEDULES:
    raise ValueError(f'Unknown loss.schedule {c.schedule!r}; valid: {sorted(SCHEDULES)}.')
  spec = LOSSES[c.name]
  reweight = SCHEDULES[c.schedule]
  if reweight is not None and not spec.reweightable:
    raise ValueError(
        f'loss.schedule={c.schedule!r} re-weights classes, which loss.name='
        f'{c.name!r} does not support; use one of '
        f'{sorted(n for n, s in LOSSES.items() if s.reweightable)}.'
    )
  if c.schedule in TLA_SCHEDULES and c.name != 'vs':
    raise ValueError(f"loss.schedule={c.schedule!r} truncates the VS loss; set loss.name='vs'.")
  if c.weighted_reduction not in WEIGHTED_REDUCTIONS:
    raise ValueError(
        f'Unknown loss.weighted_reduction {c.weighted_reduction!r}; valid: '
        f'{sorted(WEIGHTED_REDUCTIONS)}.'
    )
  if spec.geometric and head in NON_AFFINE_HEADS:
    raise ValueError(
        f'loss.name={c.name!r} needs the class vectors of an affine head; '
        f'model.head={head!r} normalises its features. Use e.g. the etf or linear head.'
    )
  counts = np.asarray(class_counts)
  base = spec.build(c, counts)
  cc = cc_sam_config if cc_sam_config is not None and cc_sam_config.flat_ratio > 0 else None
  if cc is not None:
    cc_sam.check_linear_head(head)
  cc_flat = _cc_sam_flat_loss(cc, counts) if cc is not None else None

  def objective(logits, labels, *, features, head_params, head_fn=None, step, mixup=None):
    epoch = step // steps_per_epoch  # Schedules switch at epoch boundaries, as the official code.
    weights = reweight(counts, epoch, c) if reweight is not None else None
    geometry = {}
    if spec.geometric:
      if head_fn is None:
        raise ValueError(f'loss.name={c.name!r} needs head_fn (the class vectors of the head).')
      geometry = {
          'features': features,
          'class_vectors': _affine_class_vectors(head_fn, features.shape[-1]),
      }

    def classification_loss(y):
      if weights is not None and c.weighted_reduction == 'batch':
        return jnp.mean(base(logits, y, weights, epoch, 'none', **geometry))  # sum w l / B.
      return base(logits, y, weights, epoch, 'mean', **geometry)

    loss = mixup_loss(classification_loss, labels, mixup)
    metrics = {'classification_loss': loss}
    if cc_flat is not None:
      flat, flat_metrics = cc_flat(logits, labels, features, head_params, mixup, step)
      loss = (1 - cc.flat_ratio) * loss + cc.flat_ratio * flat
      metrics.update(flat_metrics)
    if c.adversarial_weight:
      adversarial = jnp.mean(
          adversarial_feature_losses(
              features,
              labels,
              head_fn,
              class_counts=counts,
              weight=c.adversarial_weight,
              div=c.adversarial_div,
          )
      )
      alpha = adversarial_mix(epoch, total_epochs=num_epochs, cap=c.adversarial_cap)
      loss = alpha * adversarial + (1 - alpha) * loss
      metrics['adversarial_loss'] = adversarial
    if c.feature_norm_weight:
      fr = feature_norm_regularizer(features)
      loss = loss + c.feature_norm_weight * fr
      metrics['feature_norm_reg'] = fr
    if c.lwr_weight:
      lwr = lwr_regularizer(_classifier_vectors(head_params), theta=c.lwr_theta, tau=c.lwr_tau)
      if c.lwr_schedule == 'decay':  # LWR Eq. 6: lambda0 (1 - t/T)^2.
        lam_t = lwr_lambda(step / steps_per_epoch, total_epochs=num_epochs, lambda0=c.lwr_weight)
      else:  # 'constant': LWR Table 4's fixed-lambda ablation.
        lam_t = c.lwr_weight
      loss = loss + lam_t * lwr
      metrics['lwr_reg'] = lwr
    return loss, metrics

  return objective


def simple_objective(loss_fn: Callable[[jax.Array, jax.Array], jax.Array]):
  """An objective from a plain ``loss_fn(logits, labels) -> scalar`` (tests, benchmarks)."""

  def objective(logits, labels, *, features, head_params, head_fn=None, step, mixup=None):
    del features, head_params, head_fn, step
    loss = mixup_loss(lambda y: loss_fn(logits, y), labels, mixup)
    return loss, {'classification_loss': loss}

  return objective
