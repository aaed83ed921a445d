"""Stage 1 of CC-SAM: the class-conditional flat loss, in closed form and by vmap.

CC-SAM (Zhou et al., "Class-Conditional Sharpness-Aware Minimization for Deep
Long-Tailed Recognition", CVPR 2023, Sec. 3) trains the first stage on an
objective with a flat-loss term, not with a different update rule, so it lives
with the losses (``ltjax.losses.build_objective`` adds it when
``config.cc_sam.flat_ratio > 0``; its stage 2 is ``adversarial.py``):

  total = (1 - flat_ratio) * mean_i l_i  +  flat_ratio * flat_loss,
  flat_loss = (1/B) sum_i CE(z_i(theta + eps_{y_i}), y_i),

where l_i is the clean per-example loss (under mixup the mixed loss
lam CE(z_i, y_i) + (1 - lam) CE(z_i, y_perm(i))), theta the perturbed
parameters (the official code: the linear classifier W, b only) and eps_c a
perturbation along the gradient of the class-c mean loss,

  g_c = grad_theta (1/m_c) sum_{i: y_i = c} l_i        (m_c = count of c in the batch),
  eps_c = |eps_c| g_c / |g_c|.

Classes are grouped by the *original* label y_i, also under mixup, and the flat
loss uses the hard label y_i on the (mixed) features (official code
zzpustc/CC-SAM, train_cifar.py ``train()``; docs/references.md, 'CC-SAM:
stage 1', steps 3 and 6).

Radius (``radius=``), per class c with the training count n_c:

  'official'  the released code (docs/references.md, 'CC-SAM: stage 1', step 5), per tensor p:
              |eps_c^p| = noise_ratio * sqrt(|theta| / (2 |g_c^p|)) * (P / (n_c - 1))^(1/4),
              |theta| = global L2 norm of the perturbed parameters + 1e-12,
              P = their total number of entries.
  'paper'     Eq. 8-9: eps_c = sqrt(k) rho_c g_c / |g_c| with
              rho_c = (|w| / (2 |g_c|))^(1/2) k^(-1/4) (n_c - 1)^(-1/4), i.e.
              |eps_c| = noise_ratio * sqrt(|w| / (2 |g_c|)) * (k / (n_c - 1))^(1/4)
              with ONE joint gradient g_c over all perturbed tensors, |w| and k
              the norm (+ 1e-12) and size of the perturbed set. The paper has no
              noise_ratio (= 1 is literally Eq. 8-9); the code's knob scales both.
  'fixed'     |eps_c| = rho along the joint g_c (the paper's Table-2 ablation
              "Stage 1 + dir" uses rho = 1). Only here is ``rho`` used.

Guards (the official code has none): a class with n_c = 1 would divide by
n_c - 1 = 0, so n_c - 1 is clamped to >= 1 (such a class gets the radius of
n_c = 2); a zero gradient (|g_c^p| = 0, no direction) gets eps = 0 instead of
0/0. Both are applied identically by every implementation here.

What is held constant, and why. The official code computes each g_c with a
separate ``autograd.grad`` (detached) and writes W + eps_c through ``.data``,
then takes one backward of the total loss. So eps_c -- including the features,
residuals and |theta| inside it -- is a constant, while the flat term's
gradient w.r.t. W, b (at the perturbed point, applied to the unperturbed
weights: the SAM approximation) and w.r.t. the features f_i (through
(W + eps_c) f_i, hence into the backbone) are live. Every function here
reproduces exactly that: stop_gradient on eps, live W, b and f_i.

Closed form for a linear head (``head_flat_loss``). With z_i = W^T f_i + b,
W (d, C), and residuals r_i = dl_i/dz_i (C,),

  g_c^W = (1/m_c) sum_{j in c} f_j r_j^T,     g_c^b = (1/m_c) sum_{j in c} r_j,

so the perturbed logit of sample i (class c = y_i) is

  z_i + eps_c^W^T f_i + eps_c^b
    = z_i + (s_c^W / m_c) sum_{j in c} (f_j . f_i) r_j + (s_c^b / m_c) sum_{j in c} r_j,

with s_c^p = |eps_c^p| / |g_c^p|. Write u_i = sum_j M_ij (f_i . f_j) r_j, where
M_ij = [y_i = y_j] is the same-class mask: u = (M o F F^T) R, one (B, B) x
(B, C) product. The norms follow without ever forming a (d, C) matrix per class:

  m_c^2 |g_c^W|^2 = sum_{i,j in c} (r_i . r_j)(f_i . f_j) = sum_{i in c} r_i . u_i,
  m_c^2 |g_c^b|^2 = |sum_{j in c} r_j|^2.

Class sums are segment sums keyed by the index of each class's first sample in
the batch, so no buffer is per class: cost O(B^2 (d + C)) (plus the B d C of
the head itself, shared with the clean loss when the model's logits are
passed), no (B, d, C) tensor, and independent of how many classes are present.
In u, f_i (row) is live and f_j (column) constant, so the gradients match the
per-class loop; R is constant. Like the official loop (which runs on the
outputs DataParallel gathers), the class statistics are over the global batch:
on a data-sharded batch the B x B products all-gather F (B, d) and R (B, C).

Generic path (``generic_flat_loss``): per-class gradients of any parameter
subset by one forward + a vmapped VJP over class weight vectors, the perturbed
per-example losses by a vmapped call of a user function, chunked over classes
with ``jax.lax.map`` (and rematerialised) so memory is that of ``class_chunk``
classes. It is the reference the closed form is tested against and the way to
perturb more than the head (the caller's function recomputes the forward of the
perturbed part). Its cost grows with the number of classes present.

Use in a train step (one backward pass for everything)::

  clean_fn = lambda z: per_example_clean_loss(z)          # (B, C) -> (B,), mixup-mixed
  clean = jnp.mean(clean_fn(logits))
  flat, metrics = head_flat_loss(features, labels, params['head'], clean_fn,
                                 logits=logits, class_counts=counts,
                                 noise_ratio=1e-6, radius='official')
  loss = (1 - flat_ratio) * clean + flat_ratio * flat
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from ltjax.losses.cross_entropy import softmax_cross_entropy
from ltjax.param_paths import path_mask

RADII = ('official', 'paper', 'fixed')
# The official code adds this to |theta| (its ``grad_norm`` of the parameters).
THETA_EPS = 1e-12

PerExampleLoss = Callable[[jax.Array], jax.Array]
# 'gradient': eps_c along the class gradient (the method); 'random': Table 2's "Stage 1 + mag".
DIRECTIONS = ('gradient', 'random')


def random_direction_terms(
    key: jax.Array, labels: jax.Array, features: jax.Array, num_classes: int, *, chunk: int = 8
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per sample i of class c: (R_c^T f_i, |R_c|^2, r_c, |r_c|^2) for Gaussian R_c, r_c.

  R_c (d, C) and r_c (C,) are drawn from ``fold_in(key, c)``, so the samples
  of a class share their direction. They are drawn again for each sample
  inside ``lax.map`` (``chunk`` samples at a time), so memory is that of
  ``chunk`` (d, C) draws, not of every class. f_i stays live (the
  perturbation acts on (W + eps_c) f_i); R and r are constants.
  """
  d = features.shape[-1]

  def one(args):
    y, f = args
    key_w, key_b = jax.random.split(jax.random.fold_in(key, y))
    r = jax.random.normal(key_w, (d, num_classes), f.dtype)
    rb = jax.random.normal(key_b, (num_classes,), f.dtype)
    return f @ r, jnp.sum(r * r), rb, jnp.sum(rb * rb)

  return jax.lax.map(one, (labels, features), batch_size=chunk)


def check_linear_head(head_name: str) -> None:
  """The closed form perturbs W and b of a linear head: ``model.head`` must be 'linear'."""
  if head_name != 'linear':
    raise ValueError(
        "cc_sam perturbs a linear classifier; set model.head='linear' (got " f'{head_name!r}).'
    )


# --------------------------------------------------------------------------
# Shared pieces.
# --------------------------------------------------------------------------


def _check_radius(radius: str, rho: float | None) -> None:
  if radius not in RADII:
    raise ValueError(f'Unknown radius {radius!r}; valid: {list(RADII)}.')
  if radius == 'fixed' and rho is None:
    raise ValueError("radius='fixed' needs rho (the norm of every eps_c).")
  if radius != 'fixed' and rho is not None:
    raise ValueError(
        f"rho is only used with radius='fixed' (got radius={radius!r}); "
        'the class-conditional radii are scaled by noise_ratio.'
    )


def _count_factor(counts_minus_one: jax.Array, num_params: int) -> jax.Array:
  """(P / (n_c - 1))^(1/4), with n_c - 1 clamped to >= 1 (official code: division by 0)."""
  return (num_params / jnp.maximum(counts_minus_one, 1.0)) ** 0.25


def _scales(
    g_sq: Sequence[jax.Array],
    n_minus_one: jax.Array,
    theta_norm: jax.Array,
    num_params: int,
    *,
    radius: str,
    noise_ratio: float,
    rho: float | None,
) -> list[jax.Array]:
  """s^p = |eps^p| / |g^p| for each tensor p, from the squared gradient norms.

  Args:
    g_sq: per tensor, |g_c^p|^2 (any common shape, e.g. (B,) per sample's class).
    n_minus_one: n_c - 1 (same shape), training counts.
    theta_norm: |theta| + 1e-12 (scalar).
    num_params: P (= k).

  Returns:
    Per tensor, s^p (0 where the norm the radius divides by is 0).
  """
  if radius == 'official':
    norms_sq = list(g_sq)  # Every tensor its own radius.
  else:
    joint = sum(g_sq)  # One radius for the joint gradient (paper Eq. 9, 'fixed').
    norms_sq = [joint] * len(g_sq)
  out = []
  for n_sq in norms_sq:
    n_sq = jnp.maximum(n_sq, 0.0)  # Gram sums can round to -tiny.
    ok = n_sq > 0
    safe = jnp.where(ok, n_sq, 1.0)
    if radius == 'fixed':
      s = rho / jnp.sqrt(safe)
    else:
      # |eps| / |g| = noise_ratio sqrt(|theta| / 2) (P / (n - 1))^(1/4) |g|^(-3/2).
      s = (
          noise_ratio
          * jnp.sqrt(theta_norm / 2.0)
          * _count_factor(n_minus_one, num_params)
          * safe**-0.75
      )
    out.append(jnp.where(ok, s, 0.0))
  return out


def _residuals(clean_loss, logits: jax.Array) -> jax.Array:
  """R = dl_i/dz_i (B, C) from a per-example loss function, or R itself."""
  if not callable(clean_loss):
    residuals = jnp.asarray(clean_loss)
    if residuals.shape != logits.shape:
      raise ValueError(
          f"residuals must have the logits' shape {logits.shape}, " f'got {residuals.shape}.'
      )
    return jax.lax.stop_gradient(residuals)
  z = jax.lax.stop_gradient(logits)
  losses, vjp = jax.vjp(clean_loss, z)
  if losses.shape != z.shape[:1]:
    raise ValueError(
        'clean_loss must map logits (B, C) to per-example losses (B,), '
        f'got shape {losses.shape}.'
    )
  # Row i of the VJP with ones is dl_i/dz_i because l_i depends on z_i only.
  (residuals,) = vjp(jnp.ones_like(losses))
  return residuals


# --------------------------------------------------------------------------
# Closed form for a linear head.
# --------------------------------------------------------------------------


def head_flat_loss(
    features: jax.Array,
    labels: jax.Array,
    head_params: dict[str, jax.Array],
    clean_loss: PerExampleLoss | jax.Array,
    *,
    class_counts,
    noise_ratio: float = 1e-6,
    radius: str = 'official',
    rho: float | None = None,
    logits: jax.Array | None = None,
    flat_loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    direction: str = 'gradient',
    key: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CC-SAM's flat loss with the linear head perturbed, in closed form.

  Equal in value and in gradients (w.r.t. W, b, the features and the logits)
  to the official per-class loop; see the module docstring for the derivation.
  Cost O(B^2 (d + C)) on top of the head's own B d C, whatever the number of
  classes present.

  Args:
    features: (B, d) penultimate features f_i (live: the backbone's gradient
      flows through (W + eps_c) f_i).
    labels: (B,) int original labels y_i (classes are grouped by them and the
      flat loss uses them as hard labels, also under mixup).
    head_params: ``{'kernel': (d, C), 'bias': (C,)}`` of ``LinearHead``.
    clean_loss: the clean per-example loss as a function of the logits,
      ``(B, C) -> (B,)`` (e.g. the mixup-mixed CE); the residuals
      r_i = dl_i/dz_i come from one VJP of it. Row i of its output must depend
      on row i of the logits only (true for every per-example loss; not for a
      batch-normalised weighted mean). Alternatively the residuals R (B, C)
      themselves (treated as constants).
    class_counts: (C,) training-set counts n_c (the radius uses n_c - 1).
    noise_ratio: the official code's scale of the radius (1e-6 in both of its
      CIFAR configs); multiplies 'official' and 'paper'.
    radius: 'official' | 'paper' | 'fixed' (module docstring).
    rho: |eps_c| for ``radius='fixed'``.
    logits: (B, C) the live logits W^T f + b if already computed (the model's
      output): passing them lets the clean and flat terms share the head's
      forward and backward. Computed from ``features`` when None.
    flat_loss: ``(logits, labels) -> (B,)`` loss at the perturbed logits;
      default hard-label CE, as the official code.
    direction: 'gradient' (the method) or 'random': eps_c keeps its
      magnitude |eps_c| but points along a Gaussian direction drawn per class
      from ``key`` (CC-SAM Table 2, "Stage 1 + mag"); per tensor for the
      'official' radius, jointly otherwise. Costs a (d, C) draw per sample
      (``random_direction_terms``): an ablation for heads of CIFAR to
      Places-LT size, not for iNaturalist's.
    key: PRNG key of the random directions (``direction='random'``).

  Returns:
    (flat_loss, metrics): the scalar mean_i flat_loss_i and scalars
    'cc_sam_flat_loss', 'cc_sam_eps_kernel_norm', 'cc_sam_eps_bias_norm'
    (means over samples of |eps_{y_i}|) and 'cc_sam_classes_present'.
  """
  _check_radius(radius, rho)
  if direction not in DIRECTIONS:
    raise ValueError(f'Unknown direction {direction!r}; valid: {list(DIRECTIONS)}.')
  if direction == 'random' and key is None:
    raise ValueError("direction='random' needs a PRNG key.")
  if 'kernel' not in head_params or 'bias' not in head_params:
    raise ValueError(
        'head_flat_loss needs a linear head with parameters kernel (d, C) and '
        f'bias (C,); got {sorted(head_params)}. Use generic_flat_loss for '
        'other heads.'
    )
  kernel, bias = head_params['kernel'], head_params['bias']
  labels = jnp.asarray(labels, jnp.int32)
  dtype = jnp.promote_types(kernel.dtype, jnp.float32)
  counts = jnp.asarray(class_counts, dtype)
  if counts.shape != bias.shape:
    raise ValueError(
        f'class_counts must have shape {bias.shape} (one count per class), ' f'got {counts.shape}.'
    )
  f = features.astype(dtype)
  if logits is None:
    logits = f @ kernel + bias
  batch = f.shape[0]
  r = _residuals(clean_loss, logits).astype(dtype)
  f_const = jax.lax.stop_gradient(f)

  same = labels[:, None] == labels[None, :]  # M, (B, B)
  m = jnp.sum(same, axis=1).astype(dtype)  # m_{y_i}
  # Slot of a class = index of its first sample: class sums without class ids.
  first = jnp.argmax(same, axis=1)

  def class_sum(x):  # sum_{j: y_j = y_i} x_j, broadcast back to every i.
    return jax.ops.segment_sum(x, first, num_segments=batch)[first]

  # u_i = sum_{j in c} (f_i . f_j) r_j with f_i live, f_j constant.
  gram = jnp.where(same, f @ f_const.T, 0.0)
  u = gram @ r
  u_const = jax.lax.stop_gradient(u)
  v = class_sum(r)  # sum_{j in c} r_j, constant
  gw_sq = class_sum(jnp.sum(r * u_const, axis=-1)) / m**2
  gb_sq = jnp.sum(v * v, axis=-1) / m**2

  theta = jax.lax.stop_gradient(
      jnp.sqrt(jnp.sum(kernel.astype(dtype) ** 2) + jnp.sum(bias.astype(dtype) ** 2)) + THETA_EPS
  )
  num_params = kernel.size + bias.size
  n_minus_one = counts[labels] - 1.0
  s_w, s_b = _scales(
      [gw_sq, gb_sq],
      n_minus_one,
      theta,
      num_params,
      radius=radius,
      noise_ratio=noise_ratio,
      rho=rho,
  )
  s_w, s_b = jax.lax.stop_gradient(s_w), jax.lax.stop_gradient(s_b)

  if direction == 'gradient':
    perturbed = logits.astype(dtype) + (s_w / m)[:, None] * u + (s_b / m)[:, None] * v
  else:  # |eps_c| from the class gradient, the direction random (Table 2, "Stage 1 + mag").
    eps_w = s_w * jnp.sqrt(jnp.maximum(gw_sq, 0.0))
    eps_b = s_b * jnp.sqrt(gb_sq)
    proj_w, norm_w_sq, dir_b, norm_b_sq = random_direction_terms(key, labels, f, bias.shape[0])
    if radius == 'official':  # Each tensor along its own unit direction.
      norm_w, norm_b = jnp.sqrt(norm_w_sq), jnp.sqrt(norm_b_sq)
    else:  # One unit direction over (W, b), scaled by the joint radius |eps_c|.
      eps_w = eps_b = jnp.sqrt(eps_w**2 + eps_b**2)
      norm_w = norm_b = jnp.sqrt(norm_w_sq + norm_b_sq)
    perturbed = (
        logits.astype(dtype)
        + jax.lax.stop_gradient(eps_w / norm_w)[:, None] * proj_w
        + jax.lax.stop_gradient(eps_b / norm_b)[:, None] * dir_b
    )
  losses = (flat_loss or softmax_cross_entropy)(perturbed, labels)
  loss = jnp.mean(losses)
  metrics = {
      'cc_sam_flat_loss': loss,
      'cc_sam_eps_kernel_norm': jnp.mean(s_w * jnp.sqrt(jnp.maximum(gw_sq, 0.0))),
      'cc_sam_eps_bias_norm': jnp.mean(s_b * jnp.sqrt(gb_sq)),
      'cc_sam_classes_present': jnp.sum(first == jnp.arange(batch)),
  }
  return loss, metrics


# --------------------------------------------------------------------------
# Generic path: any parameter subset, per-class gradients by vmap.
# --------------------------------------------------------------------------


def _mask_leaves(params, mask) -> list[bool]:
  """The perturbation mask as a list of Python bools over ``params``' leaves."""
  if mask is None:
    return [True] * len(jax.tree_util.tree_leaves(params))
  if isinstance(mask, str):
    mask = path_mask(params, mask)
  flags = jax.tree_util.tree_leaves(mask)
  if len(flags) != len(jax.tree_util.tree_leaves(params)):
    raise ValueError(
        'mask must be a pytree of bools with the structure of params (or a '
        'path regex for ltjax.param_paths.path_mask).'
    )
  return [bool(x) for x in flags]


def _present_classes(labels: jax.Array, slots: int) -> jax.Array:
  """(slots,) the distinct labels in ascending order, then -1 for unused slots."""
  big = jnp.iinfo(jnp.int32).max
  ordered = jnp.sort(labels.astype(jnp.int32))
  starts = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  distinct = jnp.sort(jnp.where(starts, ordered, big))  # Repeats pushed to the end.
  distinct = jnp.pad(distinct, (0, max(0, slots - distinct.shape[0])), constant_values=big)
  return jnp.where(distinct[:slots] == big, -1, distinct[:slots])


def generic_flat_loss(
    params: Any,
    labels: jax.Array,
    clean_loss_of: Callable[[Any], jax.Array],
    flat_loss_of: Callable[[Any], jax.Array],
    *,
    class_counts,
    mask: Any = None,
    noise_ratio: float = 1e-6,
    radius: str = 'official',
    rho: float | None = None,
    num_slots: int | None = None,
    class_chunk: int = 8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CC-SAM's flat loss for any perturbed parameter subset, per class by vmap.

  For every class c present: g_c = grad of (1/m_c) sum_{i in c} l_i w.r.t. the
  perturbed tensors (one forward of ``clean_loss_of``, then its VJP vmapped
  over the class weight vectors [y_i = c] / m_c), eps_c from the radius
  (per tensor for 'official'), then ``flat_loss_of`` at params + eps_c with
  eps_c constant, kept on the samples of c. flat = (1/B) sum_c sum_{i in c}.

  Classes are visited through ``num_slots`` static slots holding the sorted
  distinct labels of the batch (unused slots = -1), in chunks of
  ``class_chunk`` mapped with ``jax.lax.map``. Why slots and not all C
  classes: a batch has at most min(B, C) classes, so the cost is bounded by B,
  not C (8142 on iNaturalist). Slots are sorted so the empty ones come last,
  and an all-empty chunk is skipped by ``lax.cond``: the work is
  ceil(present / class_chunk) chunks, at most class_chunk - 1 wasted classes
  (the cost per chunk is that of class_chunk classes, empty slots included).
  Each chunk is rematerialised in the backward pass, so memory is that of one
  chunk (class_chunk gradients of the subset plus class_chunk perturbed
  forwards) at the price of recomputing those forwards. The cost therefore
  grows with the classes present: at iNaturalist scale (B 512, d 2048,
  C 8142) one 8-class chunk costs ~30-45 head-only SGD steps; use the closed
  form for the head.

  Args:
    params: the parameters (a pytree; full or just the subset).
    labels: (B,) int original labels.
    clean_loss_of: ``params -> (B,)`` clean per-example losses (mixup-mixed).
      Called on constant (stop_gradient) parameters; only its gradient w.r.t.
      the perturbed leaves is used.
    flat_loss_of: ``params -> (B,)`` per-example flat losses with hard labels.
      Called with the perturbed leaves replaced by leaf + eps_c (eps_c
      constant, the leaf live) and the other leaves live; it may close over
      live activations (e.g. the features, for the head) so their gradients
      flow as in the official loop. For a subset beyond the head it
      recomputes the forward of the perturbed part.
    class_counts: (C,) training counts n_c.
    mask: which leaves are perturbed: None (all), a pytree of bools like
      ``params``, or a path regex (``ltjax.param_paths.path_mask``), e.g.
      ``'head/.*'`` or ``'(backbone/stage3.*|head/.*)'``.
    noise_ratio, radius, rho: as in :func:`head_flat_loss`; |theta| and P are
      the norm and size of the perturbed leaves.
    num_slots: static bound on the number of distinct labels in a batch;
      default min(B, C), always safe (classes beyond the bound are dropped).
    class_chunk: classes per ``lax.map`` step (the memory/parallelism knob).

  Returns:
    (flat_loss, metrics) with 'cc_sam_flat_loss' and 'cc_sam_classes_present'.
  """
  _check_radius(radius, rho)
  labels = jnp.asarray(labels, jnp.int32)
  leaves, treedef = jax.tree_util.tree_flatten(params)
  flags = _mask_leaves(params, mask)
  idx = [i for i, flag in enumerate(flags) if flag]
  if not idx:
    raise ValueError('mask selects no parameter to perturb.')
  counts = jnp.asarray(class_counts)
  if counts.ndim != 1:
    raise ValueError(f'class_counts must be (C,) training counts, got shape {counts.shape}.')
  num_classes = counts.shape[0]
  batch = labels.shape[0]

  def merge(base, sub):
    full = list(base)
    for i, leaf in zip(idx, sub):
      full[i] = leaf
    return jax.tree_util.tree_unflatten(treedef, full)

  const_leaves = [jax.lax.stop_gradient(x) for x in leaves]
  theta_const = [const_leaves[i] for i in idx]
  dtype = jnp.promote_types(theta_const[0].dtype, jnp.float32)
  theta_norm = jnp.sqrt(sum(jnp.sum(x.astype(dtype) ** 2) for x in theta_const)) + THETA_EPS
  num_params = int(sum(x.size for x in theta_const))

  clean, vjp = jax.vjp(lambda sub: clean_loss_of(merge(const_leaves, sub)), theta_const)
  if clean.shape != (batch,):
    raise ValueError(
        f'clean_loss_of must return per-example losses ({batch},), ' f'got {clean.shape}.'
    )

  def per_class(c):
    in_c = labels == c
    m_c = jnp.sum(in_c)
    weights = jnp.where(in_c, 1.0 / jnp.maximum(m_c, 1), 0.0).astype(clean.dtype)
    (grads,) = vjp(weights)
    grads = [jax.lax.stop_gradient(g) for g in grads]
    g_sq = [jnp.sum(g.astype(dtype) ** 2) for g in grads]
    n_minus_one = counts[jnp.clip(c, 0, num_classes - 1)].astype(dtype) - 1.0
    scales = _scales(
        g_sq, n_minus_one, theta_norm, num_params, radius=radius, noise_ratio=noise_ratio, rho=rho
    )
    perturbed = [
        leaves[i] + jax.lax.stop_gradient(s * g).astype(leaves[i].dtype)
        for i, s, g in zip(idx, scales, grads)
    ]
    losses = flat_loss_of(merge(leaves, perturbed))
    return jnp.sum(jnp.where(in_c, losses, 0.0))

  slots = num_slots or min(batch, num_classes)
  chunk = max(1, min(class_chunk, slots))
  num_chunks = -(-slots // chunk)
  present = _present_classes(labels, slots)
  present = jnp.pad(present, (0, num_chunks * chunk - slots), constant_values=-1)
  present = present.reshape(num_chunks, chunk)

  @jax.checkpoint
  def chunk_sum(classes):
    return jax.lax.cond(
        jnp.any(classes >= 0),
        lambda cs: jnp.sum(jax.vmap(per_class)(cs)),
        lambda cs: jnp.zeros((), dtype),
        classes,
    )

  total = jnp.sum(jax.lax.map(chunk_sum, present))
  loss = total / batch
  return loss, {'cc_sam_flat_loss': loss, 'cc_sam_classes_present': jnp.sum(present >= 0)}


def head_flat_loss_vmap(
    features: jax.Array,
    labels: jax.Array,
    head_params: dict[str, jax.Array],
    clean_loss: PerExampleLoss,
    *,
    class_counts,
    noise_ratio: float = 1e-6,
    radius: str = 'official',
    rho: float | None = None,
    flat_loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    num_slots: int | None = None,
    class_chunk: int = 8,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """:func:`generic_flat_loss` for a linear head, with the signature of :func:`head_flat_loss`.

  The features are reused for every class (the head is the whole perturbed
  part); ``clean_loss`` must be a function of the logits.
  """
  f = features
  flat = flat_loss or softmax_cross_entropy
  f_const = jax.lax.stop_gradient(f)
  head = {'kernel': head_params['kernel'], 'bias': head_params['bias']}

  def logits_of(p, feats):
    dtype = jnp.promote_types(p['kernel'].dtype, jnp.float32)
    return feats.astype(dtype) @ p['kernel'] + p['bias']

  return generic_flat_loss(
      head,
      labels,
      lambda p: clean_loss(logits_of(p, f_const)),
      lambda p: flat(logits_of(p, f), labels),
      class_counts=class_counts,
      noise_ratio=noise_ratio,
      radius=radius,
      rho=rho,
      num_slots=num_slots,
      class_chunk=class_chunk,
  )
