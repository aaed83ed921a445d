"""Tests for ltjax.losses.cc_sam: the closed form and vmapped flat loss == the official loop."""

# The reference is ``official_loop`` below, written like the released code
# (zzpustc/CC-SAM, train_cifar.py ``train()``; docs/references.md, 'CC-SAM:
# stage 1'): for every class present, a separate gradient of the class-mean
# clean loss, a per-tensor radius, the perturbed parameters, the flat CE on that
# class's samples, and back to the unperturbed parameters (functional here, so
# "restore" is implicit). Everything is compared in value and in gradients, in
# float64 to round-off.

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ltjax.models import Classifier
from ltjax.models.heads import LinearHead
from ltjax import losses
from ltjax.losses import cc_sam

B, D, C = 12, 5, 12
NOISE = 0.3  # Large, so eps changes the loss by O(1) and a wrong eps shows.
RHO = 0.7  # For radius='fixed'.
# n_6 = 1 exercises the n_c - 1 guard.
COUNTS = np.array([50, 20, 9, 5, 3, 2, 1, 30, 7, 4, 12, 2])
sg = jax.lax.stop_gradient
ce = losses.softmax_cross_entropy
# 12 slots in chunks of 5: a full, a partial and (for few classes) skipped empty chunks.
VMAPPED = functools.partial(cc_sam.head_flat_loss_vmap, class_chunk=5)

# name -> (labels, mixup partner permutation, lambda); lambda = 1 is no mixup.
IDENTITY = np.arange(B)
CASES = {
    'absent_classes': (np.array([0, 0, 0, 1, 1, 3, 3, 3, 3, 5, 6, 6]), IDENTITY, 1.0),
    'one_per_class': (np.array([6, 0, 4, 2, 3, 1, 5, 11, 8, 10, 7, 9]), IDENTITY, 1.0),
    'all_one_class': (np.full(B, 4), IDENTITY, 1.0),
    'mixup': (
        np.array([2, 0, 0, 1, 1, 3, 3, 3, 3, 5, 6, 2]),
        np.array([3, 7, 1, 0, 11, 2, 9, 4, 6, 10, 8, 5]),
        0.35,
    ),
}


def clean_loss_fn(labels, perm, lam):
  """The clean per-example loss of the logits: mixup's lam CE(z, y) + (1 - lam) CE(z, y_perm)."""
  y, y_partner = jnp.asarray(labels), jnp.asarray(labels)[perm]
  return lambda z: lam * ce(z, y) + (1 - lam) * ce(z, y_partner)


@functools.lru_cache(maxsize=None)
def compiled(flat_fn, radius):
  """value_and_grad w.r.t. (W, b, F) of ``flat_fn``, jitted once for every case.

  Call as ``(kernel, bias, features, labels, perm, lam, counts, noise_ratio)``.
  """

  def loss(kernel, bias, features, labels, perm, lam, counts, noise_ratio):
    clean = clean_loss_fn(labels, perm, lam)
    return flat_fn(
        features,
        labels,
        {'kernel': kernel, 'bias': bias},
        clean,
        class_counts=counts,
        noise_ratio=noise_ratio,
        radius=radius,
        rho=RHO if radius == 'fixed' else None,
    )[0]

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def case_args(case, features, kernel, bias, counts=COUNTS, noise_ratio=NOISE):
  labels, perm, lam = CASES[case]
  return (
      kernel,
      bias,
      features,
      jnp.asarray(labels),
      jnp.asarray(perm),
      lam,
      jnp.asarray(counts),
      noise_ratio,
  )


def loop_grads(case, radius):
  """value_and_grad w.r.t. (W, b, F) of the official loop on ``case``'s labels.

  Run eagerly (op by op, as the official PyTorch code): every case re-uses the
  same cached primitives, which is cheaper than compiling each unrolled loop.
  """
  labels, perm, lam = CASES[case]
  clean = clean_loss_fn(labels, perm, lam)
  return jax.value_and_grad(
      lambda w, b, f: head_loop(w, b, f, labels, clean, radius), argnums=(0, 1, 2)
  )


def official_loop(
    params, names, labels, clean_of, flat_of, *, counts=COUNTS, noise_ratio=NOISE, radius='official'
):
  """The released code's per-class loop over the tensors ``names`` of ``params``.

  ``clean_of(params)``: (B,) clean (mixed) losses; ``flat_of(params)``: (B,)
  hard-label losses. Parameters are a flat dict name -> array. ``radius``
  'paper' and 'fixed' swap in one joint gradient norm (Eq. 9) for the
  per-tensor ones.
  """
  frozen = {k: sg(v) for k, v in params.items()}
  theta = sg(jnp.sqrt(sum(jnp.sum(params[k] ** 2) for k in names))) + 1e-12
  num = sum(params[k].size for k in names)
  total = 0.0
  for c in np.unique(labels):
    idx = np.flatnonzero(labels == c)
    # One separate gradient per class (autograd.grad in the official code), detached.
    class_mean = lambda sub, idx=idx: jnp.mean(clean_of({**frozen, **sub})[idx])
    grads = jax.grad(class_mean)({k: frozen[k] for k in names})
    norms = {k: jnp.sqrt(jnp.sum(g**2)) for k, g in grads.items()}
    if radius in ('paper', 'fixed'):
      joint = jnp.sqrt(sum(n**2 for n in norms.values()))
      norms = {k: joint for k in names}
    perturbed = dict(params)
    for k in names:  # Per tensor: |eps| = nr sqrt(|theta| / (2|g|)) (P / (n_c - 1))^(1/4).
      # Our guards: n_c - 1 >= 1, and |g| = 0 (no direction) -> no perturbation.
      norm = jnp.where(norms[k] > 0, norms[k], 1.0)
      size = noise_ratio * jnp.sqrt(theta / (2 * norm)) * (num / max(counts[c] - 1, 1)) ** 0.25
      if radius == 'fixed':
        size = RHO
      perturbed[k] = params[k] + sg(jnp.where(norms[k] > 0, size, 0.0) * grads[k] / norm)
    total = total + jnp.sum(flat_of(perturbed)[idx])  # Flat CE on class c's samples.
  return total / labels.shape[0]


def random_problem(seed=0):
  rng = np.random.default_rng(seed)
  features = jnp.asarray(rng.normal(size=(B, D)))
  kernel = jnp.asarray(rng.normal(size=(D, C)) * 0.5)
  bias = jnp.asarray(rng.normal(size=(C,)) * 0.1)
  return features, kernel, bias


def head_loop(kernel, bias, features, labels, clean, radius, counts=COUNTS):
  y = jnp.asarray(labels)
  logits = lambda p, f: f @ p['kernel'] + p['bias']
  return official_loop(
      {'kernel': kernel, 'bias': bias},
      ['kernel', 'bias'],
      labels,
      lambda p: clean(logits(p, sg(features))),
      lambda p: ce(logits(p, features), y),
      counts=counts,
      radius=radius,
  )


@pytest.mark.parametrize(
    'case,radius',
    [(case, 'official') for case in sorted(CASES)]
    + [('mixup', 'paper'), ('absent_classes', 'fixed')],
)
def test_closed_form_and_vmap_equal_official_loop(x64, case, radius):
  """Value and gradients w.r.t. W, b and the features, to float64 round-off."""
  del x64
  labels, perm, lam = CASES[case]
  features, kernel, bias = random_problem()
  clean = clean_loss_fn(labels, perm, lam)
  want = loop_grads(case, radius)(kernel, bias, features)
  args = case_args(case, features, kernel, bias)
  chex.assert_trees_all_close(
      compiled(cc_sam.head_flat_loss, radius)(*args), want, rtol=1e-10, atol=1e-10
  )
  if radius != 'fixed':  # The vmapped path's 'fixed' shares _scales with 'paper'.
    chex.assert_trees_all_close(compiled(VMAPPED, radius)(*args), want, rtol=1e-10, atol=1e-10)
  # The perturbation matters at this noise ratio (a wrong eps would show).
  assert abs(float(want[0]) - float(jnp.mean(clean(features @ kernel + bias)))) > 1e-2


def test_residuals_and_shared_logits_give_the_same_loss_and_gradients(x64):
  del x64
  labels, perm, lam = CASES['mixup']
  features, kernel, bias = random_problem()
  clean = clean_loss_fn(labels, perm, lam)
  y = jnp.asarray(labels)

  def with_residuals_and_logits(w, b, f):
    logits = f @ w + b
    residuals = jax.grad(lambda z: jnp.sum(clean(z)))(logits)
    return cc_sam.head_flat_loss(
        f,
        y,
        {'kernel': w, 'bias': b},
        residuals,
        logits=logits,
        class_counts=COUNTS,
        noise_ratio=NOISE,
    )[0]

  chex.assert_trees_all_close(
      jax.jit(jax.value_and_grad(with_residuals_and_logits, (0, 1, 2)))(kernel, bias, features),
      compiled(cc_sam.head_flat_loss, 'official')(*case_args('mixup', features, kernel, bias)),
      rtol=1e-12,
      atol=1e-12,
  )


def test_guards_single_training_sample_and_zero_gradient(x64):
  del x64
  labels, _, _ = CASES['absent_classes']
  features, kernel, bias = random_problem()
  # Class 3's samples have zero features: g_3^W = 0, so eps_3^W = 0 (not 0/0).
  features = features.at[np.flatnonzero(labels == 3)].set(0.0)
  closed = compiled(cc_sam.head_flat_loss, 'official')
  got = closed(*case_args('absent_classes', features, kernel, bias))
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(got))
  chex.assert_trees_all_close(
      got, loop_grads('absent_classes', 'official')(kernel, bias, features), rtol=1e-10, atol=1e-10
  )
  # n_c = 1 (class 6) is treated as n_c = 2.
  as_two = COUNTS.copy()
  as_two[6] = 2
  np.testing.assert_allclose(
      closed(*case_args('absent_classes', features, kernel, bias, counts=as_two))[0],
      got[0],
      rtol=1e-14,
  )


def test_zero_noise_gives_the_hard_label_clean_loss(x64):
  del x64
  labels, _, _ = CASES['mixup']
  features, kernel, bias = random_problem()
  loss, _ = compiled(cc_sam.head_flat_loss, 'official')(
      *case_args('mixup', features, kernel, bias, noise_ratio=0.0)
  )
  np.testing.assert_allclose(
      loss, jnp.mean(ce(features @ kernel + bias, jnp.asarray(labels))), rtol=1e-14
  )


class ClosedFormVariantsTest(chex.TestCase):
  """The closed form is a pure function of its arrays: the same with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_closed_form_equals_the_official_loop(self):
    with jax.enable_x64(True):
      labels, perm, lam = CASES['mixup']
      features, kernel, bias = random_problem()
      clean = clean_loss_fn(labels, perm, lam)
      y = jnp.asarray(labels)

      def closed(w, b, f):
        return cc_sam.head_flat_loss(
            f, y, {'kernel': w, 'bias': b}, clean, class_counts=COUNTS, noise_ratio=NOISE
        )[0]

      got = self.variant(jax.value_and_grad(closed, (0, 1, 2)))(kernel, bias, features)
      chex.assert_trees_all_close(
          got, loop_grads('mixup', 'official')(kernel, bias, features), rtol=1e-10, atol=1e-10
      )


def test_closed_form_builds_no_batch_by_feature_by_class_tensor():
  labels, perm, lam = CASES['mixup']
  features, kernel, bias = (x.astype(jnp.float32) for x in random_problem())
  clean = clean_loss_fn(labels, perm, lam)

  def total(w, b, f):
    return cc_sam.head_flat_loss(
        f, jnp.asarray(labels), {'kernel': w, 'bias': b}, clean, class_counts=COUNTS
    )[0]

  jaxpr = jax.make_jaxpr(jax.grad(total, (0, 1, 2)))(kernel, bias, features)
  shapes = []

  def visit(jp):
    for eqn in jp.eqns:
      shapes.extend(v.aval.shape for v in eqn.outvars if hasattr(v.aval, 'shape'))
      for value in eqn.params.values():  # Sub-jaxprs of pjit, custom_jvp, cond, ...
        for sub in value if isinstance(value, (list, tuple)) else [value]:
          sub = getattr(sub, 'jaxpr', sub)
          if hasattr(sub, 'eqns'):
            visit(sub)

  visit(jaxpr.jaxpr)
  assert shapes and max(sum(n > 1 for n in s) for s in shapes) <= 2
  assert max(int(np.prod(s)) for s in shapes) <= max(B * B, B * C, D * C, B * D)


def test_generic_path_perturbs_more_than_the_head(x64):
  """Hidden layer + head perturbed (path regex), forward recomputed per class."""
  del x64
  labels, perm, lam = CASES['mixup']
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(B, 4)))
  params = {
      'hidden': {
          'kernel': jnp.asarray(rng.normal(size=(4, D)) * 0.6),
          'bias': jnp.asarray(rng.normal(size=(D,)) * 0.1),
      },
      'head': {
          'kernel': jnp.asarray(rng.normal(size=(D, C)) * 0.5),
          'bias': jnp.asarray(rng.normal(size=(C,)) * 0.1),
      },
  }
  clean = clean_loss_fn(labels, perm, lam)
  y = jnp.asarray(labels)

  def logits(p, inputs):
    h = jnp.tanh(inputs @ p['hidden']['kernel'] + p['hidden']['bias'])
    return h @ p['head']['kernel'] + p['head']['bias']

  def generic(p, inputs):
    return cc_sam.generic_flat_loss(
        p,
        y,
        lambda q: clean(logits(q, inputs)),
        lambda q: ce(logits(q, inputs), y),
        class_counts=COUNTS,
        mask=r'hidden/kernel|head/.*',
        noise_ratio=NOISE,
        class_chunk=2,
    )[0]

  def loop(p, inputs):
    flat = {
        'hk': p['hidden']['kernel'],
        'hb': p['hidden']['bias'],
        'k': p['head']['kernel'],
        'b': p['head']['bias'],
    }
    nest = lambda q: {
        'hidden': {'kernel': q['hk'], 'bias': q['hb']},
        'head': {'kernel': q['k'], 'bias': q['b']},
    }
    return official_loop(
        flat,
        ['hk', 'k', 'b'],
        labels,
        lambda q: clean(logits(nest(q), inputs)),
        lambda q: ce(logits(nest(q), inputs), y),
    )

  got = jax.jit(jax.value_and_grad(generic, (0, 1)))(params, x)
  want = jax.jit(jax.value_and_grad(loop, (0, 1)))(params, x)
  chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)


def test_generic_slots_and_chunks(x64):
  del x64
  labels = jnp.asarray([5, 1, 5, 3, 1, 1])
  np.testing.assert_array_equal(cc_sam._present_classes(labels, 6), [1, 3, 5, -1, -1, -1])
  np.testing.assert_array_equal(cc_sam._present_classes(labels, 8), [1, 3, 5, -1, -1, -1, -1, -1])
  labels_np, perm, lam = CASES['absent_classes']
  features, kernel, bias = random_problem()
  clean = clean_loss_fn(labels_np, perm, lam)
  y = jnp.asarray(labels_np)
  hp = {'kernel': kernel, 'bias': bias}
  want = compiled(cc_sam.head_flat_loss, 'official')(
      *case_args('absent_classes', features, kernel, bias)
  )[0]
  # One class per chunk in 5 exact slots; one chunk larger than all 12 slots.
  for chunk, slots in [(1, 5), (16, None)]:
    got, metrics = jax.jit(
        lambda f, h, chunk=chunk, slots=slots: cc_sam.head_flat_loss_vmap(
            f,
            y,
            h,
            clean,
            class_counts=COUNTS,
            noise_ratio=NOISE,
            class_chunk=chunk,
            num_slots=slots,
        )
    )(features, hp)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert int(metrics['cc_sam_classes_present']) == 5


class TinyBackbone(nn.Module):
  """Dense -> BatchNorm -> ReLU: enough to check the backbone's gradient and BN state."""

  @nn.compact
  def __call__(self, x, *, train):
    x = nn.Dense(6, use_bias=False)(x.reshape(x.shape[0], -1))  # BN removes a bias.
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    return nn.relu(x)


def test_one_sgd_step_end_to_end_matches_the_loop():
  labels, perm, lam = CASES['mixup']
  rng = np.random.default_rng(2)
  images = jnp.asarray(rng.normal(size=(B, 3, 3, 2)), jnp.float32)
  model = Classifier(backbone=TinyBackbone(), head=LinearHead(C))
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  clean = clean_loss_fn(labels, perm, lam)
  y = jnp.asarray(labels)
  flat_ratio, noise = 0.5, 0.2

  def total(params, flat_fn):
    (logits, features), new_vars = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        images,
        train=True,
        mutable=['batch_stats'],
    )
    flat = flat_fn(params['head'], features, logits)
    return (1 - flat_ratio) * jnp.mean(clean(logits)) + flat_ratio * flat, new_vars

  closed = lambda hp, f, z: cc_sam.head_flat_loss(
      f, y, hp, clean, logits=z, class_counts=COUNTS, noise_ratio=noise
  )[0]
  loop = lambda hp, f, z: official_loop(
      hp,
      ['kernel', 'bias'],
      labels,
      lambda p: clean(sg(f) @ p['kernel'] + p['bias']),
      lambda p: ce(f @ p['kernel'] + p['bias'], y),
      noise_ratio=noise,
  )
  tx = optax.sgd(0.5)

  def step(flat_fn):
    params = variables['params']
    grads, new_vars = jax.grad(total, has_aux=True)(params, flat_fn)
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates), new_vars

  want, want_stats = jax.jit(lambda: step(loop))()
  got, stats = jax.jit(lambda: step(closed))()
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(stats, want_stats, rtol=1e-6, atol=1e-6)
  # The step moved every parameter, the backbone included (its gradient flows).
  moved = jax.tree_util.tree_map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), want, variables['params']
  )
  assert min(jax.tree_util.tree_leaves(moved)) > 1e-4


def test_bad_arguments_are_named():
  features, kernel, bias = (x.astype(jnp.float32) for x in random_problem())
  y = jnp.asarray(CASES['absent_classes'][0])
  hp = {'kernel': kernel, 'bias': bias}
  clean = lambda z: ce(z, y)
  with pytest.raises(ValueError, match='radius'):
    cc_sam.head_flat_loss(features, y, hp, clean, class_counts=COUNTS, radius='pape')
  with pytest.raises(ValueError, match='rho'):
    cc_sam.head_flat_loss(features, y, hp, clean, class_counts=COUNTS, radius='fixed')
  with pytest.raises(ValueError, match='rho'):
    cc_sam.head_flat_loss(features, y, hp, clean, class_counts=COUNTS, rho=0.1)
  with pytest.raises(ValueError, match='class_counts'):
    cc_sam.head_flat_loss(features, y, hp, clean, class_counts=COUNTS[:5])
  with pytest.raises(ValueError, match='kernel'):
    cc_sam.head_flat_loss(features, y, {'kernel': kernel}, clean, class_counts=COUNTS)
  with pytest.raises(ValueError, match='per-example'):
    cc_sam.head_flat_loss(features, y, hp, lambda z: jnp.mean(ce(z, y)), class_counts=COUNTS)
  with pytest.raises(ValueError, match='no parameter'):
    cc_sam.generic_flat_loss(
        hp,
        y,
        lambda p: clean(features @ p['kernel']),
        lambda p: clean(features @ p['kernel']),
        class_counts=COUNTS,
        mask='nothing',
    )


@pytest.mark.parametrize('radius', ['official', 'paper'])
def test_random_direction_keeps_the_magnitude_along_a_per_class_gaussian(x64, radius):
  # Table 2's "Stage 1 + mag": |eps_c| as the method, its direction a Gaussian draw per class.
  del x64
  labels = jnp.asarray(CASES['absent_classes'][0])
  features, kernel, bias = random_problem(3)
  clean = lambda z: ce(z, labels)
  head = {'kernel': kernel, 'bias': bias}
  key = jax.random.PRNGKey(7)
  kwargs = dict(class_counts=COUNTS, noise_ratio=NOISE, radius=radius)
  _, metrics = cc_sam.head_flat_loss(features, labels, head, clean, **kwargs)
  loss, random_metrics = cc_sam.head_flat_loss(
      features, labels, head, clean, direction='random', key=key, **kwargs
  )
  # The same magnitudes as the gradient direction's.
  for name in ('cc_sam_eps_kernel_norm', 'cc_sam_eps_bias_norm'):
    np.testing.assert_allclose(random_metrics[name], metrics[name], rtol=1e-12)
  # Brute force: each class's eps from its own draw, applied to the parameters.
  logits = features @ kernel + bias
  residuals = jax.vmap(jax.grad(lambda z, y: ce(z[None], y[None])[0]))(logits, labels)
  expected = []
  for i, y in enumerate(np.asarray(labels)):
    in_c = np.asarray(labels) == y
    g_w = np.einsum('id,ic->dc', features[in_c], residuals[in_c]) / in_c.sum()
    g_b = residuals[in_c].sum(0) / in_c.sum()
    key_w, key_b = jax.random.split(jax.random.fold_in(key, y))
    r_w = jax.random.normal(key_w, (D, C), features.dtype)
    r_b = jax.random.normal(key_b, (C,), features.dtype)
    theta = np.sqrt(np.sum(kernel**2) + np.sum(bias**2)) + cc_sam.THETA_EPS
    factor = ((kernel.size + bias.size) / max(COUNTS[y] - 1, 1)) ** 0.25
    radius_of = lambda g: NOISE * np.sqrt(theta / (2 * np.linalg.norm(g))) * factor
    if radius == 'official':
      eps_w = radius_of(g_w) * r_w / np.linalg.norm(r_w)
      eps_b = radius_of(g_b) * r_b / np.linalg.norm(r_b)
    else:
      joint = np.sqrt(np.sum(g_w**2) + np.sum(g_b**2))
      norm = np.sqrt(np.sum(r_w**2) + np.sum(r_b**2))
      eps_w, eps_b = radius_of(joint) * r_w / norm, radius_of(joint) * r_b / norm
    z = features[i] @ (kernel + eps_w) + bias + eps_b
    expected.append(ce(z[None], labels[i : i + 1])[0])
  np.testing.assert_allclose(loss, np.mean(expected), rtol=1e-10)
  with pytest.raises(ValueError, match='PRNG key'):
    cc_sam.head_flat_loss(features, labels, head, clean, direction='random', **kwargs)
