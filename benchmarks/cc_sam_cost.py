"""Cost of a CC-SAM stage-1 step relative to a plain SGD step, measured in one process.

Implementations of the flat loss (``ltjax.optim.cc_sam``), all with the
official radius (noise_ratio 1e-6) and flat_ratio 0.5; the total loss is
(1 - r) * clean + r * flat:

  sgd          the plain step (mean CE), the baseline of every ratio;
  sam          (ResNet-32 only) plain SAM around the same SGD,
               ``ltjax.optim.sam(torch_sgd, rho=0.05)`` as ltjax's train step
               calls it: a second forward-backward at the perturbed weights
               (its BatchNorm statistics discarded), i.e. the usual ~2x;
  closed_form  ``head_flat_loss`` in the same jitted step, one backward:
               B x B Gram matrices, O(B^2 (d + C)) extra;
  vmapped      ``head_flat_loss_vmap`` (``generic_flat_loss`` on the head) in
               the same jitted step: per-class VJPs and perturbed forwards,
               vmapped over chunks of 8 classes;
  loop         the official code's structure (reference §1.3): a Python loop
               over the classes present, each with its own gradient, radius,
               perturbed head and flat CE on its samples. ResNet-32: unrolled
               inside one jitted step (the labels are static, so it compiles
               per label set; here the batch is fixed). iNat head: per-class
               jitted calls dispatched from Python as the official code runs
               (unrolling 400 classes takes minutes to compile and keeps 400
               perturbed (d, C) kernels alive, 27 GB). Both gather each
               class's rows before its gradient, whereas the official code
               back-propagates every class through the full-batch logits (a
               B x d x C product per class): a *favourable* version of the loop.

Cases:
  resnet32_64, resnet32_512
               ``build_model({'name': 'resnet32', 'head': 'linear'}, 100)``,
               random 32x32x3 inputs, BatchNorm in train mode (batch_stats
               mutable), torch-style SGD (momentum 0.9, wd 2e-4). The flat
               loss's extra work (d = 64, C = 100) is far below the noise of a
               full step here, so the head part is also timed alone at the
               same shapes (200 interleaved repeats): ``*_head_extra`` rows
               give its extra ms and the implied full-step ratio.
  inat_head    the head alone at iNaturalist scale: batch 512, d = 2048,
               C = 8142, 400 classes present; every step differentiates w.r.t.
               the head AND the features (the part of a full step the head
               owns; dF is what the backbone receives). sgd and closed_form
               are timed interleaved at 400 classes present. The loop is timed
               at 5 and 20 classes present and extrapolated linearly to 400
               (``--full-loop`` also times it there, ~3 min); the vmapped path
               (~5 B x d x C products per class) is timed at one 8-class chunk
               and extrapolated to 50 chunks. Extrapolated rows say so.
  inat_sweep   the closed form at 10, 50, 100, 200, 400, 500 classes present
               (same shapes), all timed interleaved with one SGD step: its
               cost must not depend on the number of classes present.

``ratio`` divides medians; ``ratio_min`` divides the fastest steps, which on a
machine shared with other jobs is the better estimate of the intrinsic cost.

On a GPU: each timed sample runs ``--steps-per-sample`` steps (default 5
there, 1 on CPU) back to back and blocks on the last (``block_until_ready``),
and times are divided by that count; the default repeats are larger (the
steps take milliseconds); ``--full-loop`` and ``--full-vmapped`` time the
per-class loop and the vmapped path at 400 classes present directly instead
of extrapolating (seconds there, minutes to hours on CPU).

Targets: closed form <= 1.3x SGD (ResNet-32), <= 1.5x head-only SGD at iNat
scale and flat in the number of classes present.

Usage:
  python benchmarks/cc_sam_cost.py            # everything: ~10 min on 2 busy cores, where
                                              # a ResNet-32 batch-512 step takes ~20 s
  python benchmarks/cc_sam_cost.py --quick    # ResNet-32 batch 64 only, ~1-2 min, not written
  python benchmarks/cc_sam_cost.py --cases resnet32_64 inat_head inat_sweep   # ~5 min
  python benchmarks/cc_sam_cost.py --cases inat_sweep --merge   # re-run one case, keep the rest
  python benchmarks/cc_sam_cost.py --cases resnet32_64 inat_head
  python benchmarks/cc_sam_cost.py --full-loop --full-vmapped --compile-cache '' \
      --max-wait 0 --out benchmarks/results/cc_sam_cost_h100.json    # on a GPU

Each result is a JSON line on stdout; the list goes to
benchmarks/results/cc_sam_cost.json with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from _common import log  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAT_RATIO, NOISE_RATIO = 0.5, 1e-6
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 2e-4
INAT = dict(batch=512, dim=2048, classes=8142, present=400)
SWEEP = (10, 50, 100, 200, 400, 500)
ALL_CASES = ('resnet32_64', 'resnet32_512', 'inat_head', 'inat_sweep')
SAM_RHO = 0.05
# Default timed rounds per case: (CPU, GPU).
REPEATS = {'resnet32_64': (5, 30), 'resnet32_512': (2, 20), 'inat_head': (4, 20),
           'inat_sweep': (10, 20), 'head_extra': (200, 200)}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true',
                 help='ResNet-32 at batch 64 only (~1-2 min on CPU); not written unless --out.')
  p.add_argument('--cases', nargs='+', choices=ALL_CASES, default=None)
  p.add_argument('--repeats', type=int, default=None, help='Timed rounds per case.')
  p.add_argument('--max-wait', type=float, default=120.0, help='Seconds to wait for quiet.')
  p.add_argument('--out', default=None,
                 help='Results file (default benchmarks/results/cc_sam_cost.json; --quick: '
                 'none unless given).')
  p.add_argument('--no-write', action='store_true', help='Do not write the results file.')
  p.add_argument('--compile-cache', default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.jax_cache'),
                 help="JAX's persistent compilation cache ('' = off).")
  p.add_argument('--merge', action='store_true',
                 help='Keep the rows of cases not run now from the existing results file '
                 '(each row records its case and when it was measured).')
  p.add_argument('--full-loop', action='store_true',
                 help='Also time the per-class loop at 400 classes present (~3 min on CPU).')
  p.add_argument('--full-vmapped', action='store_true',
                 help='Also time the vmapped path at 400 classes present (hours on CPU; '
                 'for a GPU).')
  p.add_argument('--steps-per-sample', type=int, default=None,
                 help='Steps run back to back per timed sample, blocking after the last '
                 '(default: 1 on CPU, 5 on a GPU); times are per step.')
  args = p.parse_args(argv)
  if args.cases is None:
    args.cases = ['resnet32_64'] if args.quick else list(ALL_CASES)
  if args.out is None:
    args.no_write = args.no_write or args.quick
    args.out = os.path.join(_common.RESULTS_DIR, 'cc_sam_cost.json')
  return args


# ----------------------------------------------------------------------------
# Flat losses (``flat(features, logits, head, labels) -> scalar``).


def make_flat(kind: str, labels_np, counts, clean_fn_of: Callable):
  """The flat-loss function of implementation ``kind`` for a fixed batch."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ltjax.optim import cc_sam  # pylint: disable=g-import-not-at-top

  kw = dict(class_counts=counts, noise_ratio=NOISE_RATIO, radius='official')
  if kind == 'closed_form':
    return lambda f, z, head, y: cc_sam.head_flat_loss(f, y, head, clean_fn_of(y), logits=z,
                                                       **kw)[0]
  if kind == 'vmapped':
    return lambda f, z, head, y: cc_sam.head_flat_loss_vmap(f, y, head, clean_fn_of(y),
                                                            **kw)[0]
  assert kind == 'loop'
  sg = jax.lax.stop_gradient
  ce = cc_sam.hard_label_cross_entropy
  classes = [(int(c), np.flatnonzero(labels_np == c)) for c in np.unique(labels_np)]

  def loop(f, z, head, y):
    del z
    w, b = head['kernel'], head['bias']
    theta = sg(jnp.sqrt(jnp.sum(w**2) + jnp.sum(b**2))) + 1e-12
    num = w.size + b.size
    f_const, total = sg(f), 0.0
    for c, idx in classes:  # One gradient, radius, perturbation and flat CE per class.
      y_c = y[idx]
      grads = jax.grad(lambda p, idx=idx, y_c=y_c: jnp.mean(
          ce(f_const[idx] @ p[0] + p[1], y_c)))((sg(w), sg(b)))
      eps = []
      for g in grads:
        norm = jnp.sqrt(jnp.sum(g**2))
        size = NOISE_RATIO * jnp.sqrt(theta / (2 * norm)) * (num / max(counts[c] - 1, 1))**0.25
        eps.append(sg(jnp.where(norm > 0, size / jnp.where(norm > 0, norm, 1.0), 0.0) * g))
      total = total + jnp.sum(ce(f[idx] @ (w + eps[0]) + b + eps[1], y_c))
    return total / f.shape[0]

  return loop


def ce_clean_fn_of(y):
  from ltjax.optim import cc_sam  # pylint: disable=g-import-not-at-top
  return lambda z: cc_sam.hard_label_cross_entropy(z, y)


# ----------------------------------------------------------------------------
# Steps.


class Runner:
  """A jitted step with its own donated state.

  A call runs ``Runner.steps`` steps back to back and blocks on the last one's
  outputs (``steps`` is set by ``main``: 1 on CPU, more on a GPU, where
  dispatch then overlaps device work as in a training loop); timings are
  divided by it (``per_step``).
  """
  steps = 1

  def __init__(self, step, state, batch):
    import jax  # pylint: disable=g-import-not-at-top
    self._jax, self.step, self.state, self.batch = jax, step, state, batch
    t0 = time.perf_counter()
    self._run(1)
    self.compile_s = time.perf_counter() - t0  # First call: trace + compile + one step.

  def _run(self, n):
    for _ in range(n):
      out = self.step(self.state, *self.batch)
      self.state = out[0]
    self._jax.block_until_ready(out)

  def __call__(self):
    self._run(self.steps)


def per_step(times: dict[str, list[float]], runners) -> dict[str, list[float]]:
  """Divides each runner's sample durations by the steps one sample runs."""
  return {k: [t / getattr(runners[k], 'steps', 1) for t in v] for k, v in times.items()}


def resnet_runners(batch: int, kinds, seed: int = 0) -> dict[str, Runner]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ltjax import optim  # pylint: disable=g-import-not-at-top
  from ltjax.losses.cross_entropy import softmax_cross_entropy  # pylint: disable=g-import-not-at-top
  from ltjax.models import build_model  # pylint: disable=g-import-not-at-top

  classes = 100
  model = build_model(ml_collections.ConfigDict({'name': 'resnet32', 'head': 'linear'}),
                      classes)
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.standard_normal((batch, 32, 32, 3)), jnp.float32)
  labels_np = rng.integers(0, classes, batch)
  labels = jnp.asarray(labels_np)
  # CIFAR-100-LT IR 100 counts (500 -> 5).
  counts = np.array([int(500 * 0.01**(c / (classes - 1))) for c in range(classes)])
  variables = model.init(jax.random.PRNGKey(seed), images[:1], train=False)
  tx = optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

  sam_tx = optim.sam(tx, rho=SAM_RHO)

  def build(kind):
    flat_fn = (None if kind in ('sgd', 'sam')
               else make_flat(kind, labels_np, counts, ce_clean_fn_of))
    opt = sam_tx if kind == 'sam' else tx

    def step(state, x, y):
      params, batch_stats, opt_state = state

      def loss_fn(p):
        (logits, features), new_vars = model.apply(
            {'params': p, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats'])
        clean = softmax_cross_entropy(logits, y, reduction='mean')
        loss = clean
        if flat_fn is not None:
          loss = (1 - FLAT_RATIO) * clean + FLAT_RATIO * flat_fn(features, logits, p['head'], y)
        return loss, new_vars['batch_stats']

      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      if kind == 'sam':  # As ltjax.train.train_step(sam=True): perturbed pass's BN stats dropped.
        grad_fn = lambda p: jax.grad(loss_fn, has_aux=True)(p)[0]
        updates, opt_state = opt.update(grads, opt_state, params, grad_fn=grad_fn)
      else:
        updates, opt_state = opt.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), new_stats, opt_state), loss

    state = jax.tree_util.tree_map(jnp.copy, (variables['params'], variables['batch_stats'],
                                              opt.init(variables['params'])))
    return Runner(jax.jit(step, donate_argnums=(0,)), state, (images, labels))

  out = {}
  for kind in kinds:
    log(f'[resnet32 batch {batch}] compiling {kind}')
    out[kind] = build(kind)
  return out, int(len(np.unique(labels_np)))


def inat_labels(present: int, batch: int, classes: int, rng):
  """``batch`` labels with exactly ``present`` distinct classes out of ``classes``."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  chosen = rng.choice(classes, present, replace=False)
  labels = np.concatenate([chosen, rng.choice(chosen, batch - present)])
  rng.shuffle(labels)
  return labels


def head_runners(present: int, kinds, seed: int = 0, shared=None, *, batch=INAT['batch'],
                 dim=INAT['dim'], classes=INAT['classes']) -> dict[str, Runner]:
  """Head-only steps (gradient w.r.t. the head and the features); iNat shapes by default."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from ltjax import optim  # pylint: disable=g-import-not-at-top
  from ltjax.losses.cross_entropy import softmax_cross_entropy  # pylint: disable=g-import-not-at-top

  b, d, c = batch, dim, classes
  rng = np.random.default_rng(seed + present)
  if shared is None:
    shared = {
        'features': jnp.asarray(np.abs(rng.standard_normal((b, d))), jnp.float32),  # Post-ReLU.
        'head': {'kernel': jnp.asarray(rng.uniform(-1, 1, (d, c)) / np.sqrt(d), jnp.float32),
                 'bias': jnp.zeros((c,), jnp.float32)},
    }
  labels_np = inat_labels(present, b, c, rng)
  labels = jnp.asarray(labels_np)
  counts = np.array([max(2, int(1000 * 0.002**(k / (c - 1)))) for k in range(c)])  # 1000 -> 2.
  if c == 100:  # CIFAR-100-LT IR 100 (500 -> 5) for the ResNet-32 head.
    counts = np.array([int(500 * 0.01**(k / (c - 1))) for k in range(c)])
  tx = optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

  def build(kind):
    if kind == 'loop':
      return HeadLoopRunner(shared['head'], shared['features'], labels_np, counts)
    flat_fn = None if kind == 'sgd' else make_flat(kind, labels_np, counts, ce_clean_fn_of)

    def step(state, f, y):
      head, opt_state = state

      def loss_fn(p, feats):
        logits = feats @ p['kernel'] + p['bias']
        clean = softmax_cross_entropy(logits, y, reduction='mean')
        if flat_fn is None:
          return clean
        return (1 - FLAT_RATIO) * clean + FLAT_RATIO * flat_fn(feats, logits, p, y)

      loss, (grads, d_features) = jax.value_and_grad(loss_fn, argnums=(0, 1))(head, f)
      updates, opt_state = tx.update(grads, opt_state, head)
      return (optax.apply_updates(head, updates), opt_state), (loss, d_features)

    state = jax.tree_util.tree_map(jnp.copy, (shared['head'], tx.init(shared['head'])))
    return Runner(jax.jit(step, donate_argnums=(0,)), state, (shared['features'], labels))

  out = {}
  for kind in kinds:
    log(f'[head {b}x{d}x{c}, {present} classes present] compiling {kind}')
    out[kind] = build(kind)
  return out, shared


class HeadLoopRunner:
  """The official loop as the official code runs it: per-class calls from Python.

  One jitted clean step (loss and gradients w.r.t. the head and the features),
  then for every class present a jitted per-class call (its gradient from its
  own rows, radius, perturbed head, flat CE and that CE's gradients,
  accumulated into donated buffers), then the SGD update. Class sizes are
  padded to powers of two so only a few per-class shapes compile. Unrolling
  ~400 classes into one jitted step instead takes minutes to compile and keeps
  every class's perturbed (d, C) kernel alive for the backward (27 GB here).
  """

  def __init__(self, head, features, labels_np, counts):
    import jax  # pylint: disable=g-import-not-at-top
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from ltjax import optim  # pylint: disable=g-import-not-at-top
    from ltjax.optim import cc_sam  # pylint: disable=g-import-not-at-top
    import optax  # pylint: disable=g-import-not-at-top

    self._jax, self._np = jax, np
    ce = cc_sam.hard_label_cross_entropy
    sg = jax.lax.stop_gradient
    tx = optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    self.labels_np, self.counts = labels_np, counts
    self.features, self.labels = features, jnp.asarray(labels_np)
    self.state = jax.tree_util.tree_map(jnp.copy, (head, tx.init(head)))
    batch = features.shape[0]

    @jax.jit
    def clean_step(head, f, y):
      loss_fn = lambda p, x: (1 - FLAT_RATIO) * jnp.mean(ce(x @ p['kernel'] + p['bias'], y))
      loss, (g_head, d_f) = jax.value_and_grad(loss_fn, argnums=(0, 1))(head, f)
      theta = jnp.sqrt(jnp.sum(head['kernel']**2) + jnp.sum(head['bias']**2)) + 1e-12
      return (g_head['kernel'], g_head['bias'], d_f, loss), theta

    @functools.partial(jax.jit, donate_argnums=(0,))
    def class_step(acc, head, f, y, idx, valid, n_minus_one, theta):
      w, b = head['kernel'], head['bias']
      f_c, y_c = f[idx], y[idx]
      m = jnp.sum(valid)
      class_mean = lambda p: jnp.sum(jnp.where(valid, ce(f_c @ p[0] + p[1], y_c), 0.0)) / m
      grads = jax.grad(class_mean)((w, b))
      num = w.size + b.size
      eps = []
      for g in grads:  # Per tensor, the official radius.
        norm = jnp.sqrt(jnp.sum(g**2))
        size = (NOISE_RATIO * jnp.sqrt(theta / (2 * norm))
                * (num / jnp.maximum(n_minus_one, 1.0))**0.25)
        eps.append(sg(jnp.where(norm > 0, size / jnp.where(norm > 0, norm, 1.0), 0.0) * g))
      flat = lambda p, x: jnp.sum(jnp.where(valid, ce(x @ (p[0] + eps[0]) + p[1] + eps[1],
                                                      y_c), 0.0))
      val, (g_p, g_f) = jax.value_and_grad(flat, argnums=(0, 1))((w, b), f_c)
      scale = FLAT_RATIO / batch
      d_w, d_b, d_f, loss = acc
      d_f = d_f.at[idx].add(jnp.where(valid[:, None], scale * g_f, 0.0))
      return d_w + scale * g_p[0], d_b + scale * g_p[1], d_f, loss + scale * val

    @functools.partial(jax.jit, donate_argnums=(0,))
    def update(state, d_w, d_b):
      head, opt_state = state
      updates, opt_state = tx.update({'kernel': d_w, 'bias': d_b}, opt_state, head)
      return optax.apply_updates(head, updates), opt_state

    self.clean_step, self.class_step, self.update = clean_step, class_step, update
    self.steps = 1
    t0 = time.perf_counter()
    self()
    self.compile_s = time.perf_counter() - t0
    self.steps = Runner.steps

  def __call__(self):
    for _ in range(self.steps):
      acc = self._one_step()
    self._jax.block_until_ready((self.state, acc))

  def _one_step(self):
    np, jnp = self._np, self._jax.numpy
    head = self.state[0]
    acc, theta = self.clean_step(head, self.features, self.labels)
    for c in np.unique(self.labels_np):  # Host-side grouping, as the official loop.
      idx = np.flatnonzero(self.labels_np == c)
      pad = 1 << int(np.ceil(np.log2(idx.size)))
      valid = np.arange(pad) < idx.size
      acc = self.class_step(acc, head, self.features, self.labels,
                            jnp.asarray(np.resize(idx, pad) * valid), jnp.asarray(valid),
                            jnp.asarray(float(self.counts[c] - 1)), theta)
    self.state = self.update(self.state, acc[0], acc[1])
    return acc


# ----------------------------------------------------------------------------
# Measurement.


def measure(runners: dict[str, Runner], repeats: int, case: str, extra: dict[str, Any]):
  # Runner already ran (compiled) one step of each: no extra warm-up round.
  times = per_step(_common.time_interleaved(runners, repeats=repeats, warmup=0), runners)
  stats = {k: _common.summarize(v) for k, v in times.items()}
  base = stats['sgd']['median_ms']
  rows = []
  for kind, s in stats.items():
    rows.append(_common.record(
        f'{case}/{kind}', 'step_time', s['median_ms'], 'ms',
        ratio=s['median_ms'] / base if kind != 'sgd' else 1.0,
        ratio_min=s['min_ms'] / stats['sgd']['min_ms'], reference=f'{case}/sgd',
        min_ms=s['min_ms'], p25_ms=s['p25_ms'], p75_ms=s['p75_ms'], n=s['n'],
        compile_plus_first_step_s=runners[kind].compile_s,
        steps_per_sample=getattr(runners[kind], 'steps', 1), **extra))
  return rows


def default_repeats(case: str, args) -> int:
  return args.repeats or REPEATS[case][args.on_gpu]


def run_resnet(batch: int, args) -> list[dict]:
  kinds = ('sgd', 'sam', 'closed_form', 'vmapped', 'loop')
  runners, present = resnet_runners(batch, kinds)
  repeats = default_repeats(f'resnet32_{batch}', args)
  rows = measure(runners, repeats, f'resnet32_b{batch}', {'batch': batch,
                                                           'classes_present': present})
  for r in rows:
    if r['name'].endswith('closed_form'):
      r['target'] = '<= 1.3x sgd'
      r['target_met'] = bool(r['ratio'] <= 1.3)
    if r['name'].endswith('/sam'):
      r['rho'] = SAM_RHO
  # The head's share is far below the timing noise of a full step, so time
  # the head part alone at these shapes (many cheap repeats) and add its
  # extra cost to the full SGD step: the implied ratio, free of that noise.
  full_sgd = next(r['value'] for r in rows if r['name'].endswith('/sgd'))
  head, _ = head_runners(present, ('sgd', 'closed_form', 'vmapped'), batch=batch, dim=64,
                         classes=100)
  n_head = REPEATS['head_extra'][args.on_gpu]
  times = per_step(_common.time_interleaved(head, repeats=n_head, warmup=0), head)
  med = {k: _common.summarize(v)['median_ms'] for k, v in times.items()}
  for kind in ('closed_form', 'vmapped'):
    extra = med[kind] - med['sgd']
    rows.append(_common.record(
        f'resnet32_b{batch}/{kind}_head_extra', 'extra_step_time', extra, 'ms',
        head_sgd_ms=med['sgd'], head_ms=med[kind], implied_ratio=(full_sgd + extra) / full_sgd,
        reference=f'resnet32_b{batch}/sgd', n=n_head, batch=batch, classes_present=present))
  return rows


def _single(runner: Runner | HeadLoopRunner, repeats: int) -> float:
  """Median ms of ``repeats`` sequential steps (for steps too slow to interleave)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  times = _common.time_interleaved({'x': runner}, repeats=repeats, warmup=0)['x']
  return float(np.median(times)) * 1e3 / getattr(runner, 'steps', 1)


def run_inat_head(args) -> list[dict]:
  rows = []
  runners, shared = head_runners(INAT['present'], ('sgd', 'closed_form'))
  extra = {'batch': INAT['batch'], 'dim': INAT['dim'], 'classes': INAT['classes'],
           'classes_present': INAT['present']}
  head_rows = measure(runners, default_repeats('inat_head', args), 'inat_head', extra)
  for r in head_rows:
    if r['name'].endswith('closed_form'):
      r['target'] = '<= 1.5x head-only sgd'
      r['target_met'] = bool(r['ratio'] <= 1.5)
  rows += head_rows
  base_ms = next(r['value'] for r in head_rows if r['name'].endswith('/sgd'))
  del runners

  def point(kind, present, repeats):
    runner = head_runners(present, (kind,), shared=shared)[0][kind]
    ms = _single(runner, repeats)
    rows.append(_common.record(
        f'inat_head_{present}_present/{kind}', 'step_time', ms, 'ms', ratio=ms / base_ms,
        reference='inat_head/sgd', n=repeats, classes_present=present,
        compile_plus_first_step_s=runner.compile_s))
    return ms

  # The loop costs a fixed part plus one per-class call per class present:
  # measured at two points, extrapolated to 400 (or measured there: --full-loop).
  lo, hi = 5, 20
  t_lo, t_hi = point('loop', lo, 2), point('loop', hi, 2)
  slope = (t_hi - t_lo) / (hi - lo)
  estimate = t_lo + slope * (INAT['present'] - lo)
  rows.append(_common.record('inat_head/loop', 'step_time', estimate, 'ms',
                             ratio=estimate / base_ms, reference='inat_head/sgd',
                             extrapolated=f'linear from {lo} and {hi} classes present',
                             per_class_ms=slope, **extra))
  if args.full_loop:
    point('loop', INAT['present'], 3 if args.on_gpu else 1)
  # vmapped: one lax.map chunk of class_chunk = 8 classes; the cost is linear
  # in the number of non-empty chunks, ceil(400 / 8) = 50 at 400 classes present.
  t_chunk = point('vmapped', 8, 1)
  estimate = base_ms + (t_chunk - base_ms) * -(-INAT['present'] // 8)
  rows.append(_common.record('inat_head/vmapped', 'step_time', estimate, 'ms',
                             ratio=estimate / base_ms, reference='inat_head/sgd',
                             extrapolated='sgd + 50 x (one 8-class chunk step - sgd)',
                             **extra))
  if args.full_vmapped:
    point('vmapped', INAT['present'], 3)
  return rows


def run_sweep(args) -> list[dict]:
  """One SGD step and a closed-form step per point, all timed interleaved.

  The SGD step's cost does not depend on the labels, so one serves every
  point; interleaving all points makes their times comparable on a noisy
  machine (the closed form's per-point times are the flatness check).
  """
  runners, shared = head_runners(SWEEP[0], ('sgd',))
  for present in SWEEP:
    runners[f'closed_form_{present}'] = head_runners(present, ('closed_form',),
                                                     shared=shared)[0]['closed_form']
  # Same shapes, labels as data: every point should compile to the same program.
  programs = {hashlib.sha256(r.step.lower(r.state, *r.batch).as_text().encode()).hexdigest()
              for k, r in runners.items() if k != 'sgd'}
  times = per_step(_common.time_interleaved(runners, repeats=default_repeats('inat_sweep', args),
                                             warmup=0), runners)
  stats = {k: _common.summarize(v) for k, v in times.items()}
  base = stats['sgd']
  rows = [_common.record('inat_sweep/sgd', 'step_time', base['median_ms'], 'ms', ratio=1.0,
                         min_ms=base['min_ms'], n=base['n'])]
  for present in SWEEP:
    st = stats[f'closed_form_{present}']
    rows.append(_common.record(
        f'inat_sweep_{present}_present/closed_form', 'step_time', st['median_ms'], 'ms',
        ratio=st['median_ms'] / base['median_ms'], ratio_min=st['min_ms'] / base['min_ms'],
        reference='inat_sweep/sgd', min_ms=st['min_ms'], p25_ms=st['p25_ms'],
        p75_ms=st['p75_ms'], n=st['n'], classes_present=present))
  medians = [stats[f'closed_form_{p}']['median_ms'] for p in SWEEP]
  mins = [stats[f'closed_form_{p}']['min_ms'] for p in SWEEP]
  # The fastest of the interleaved steps is the estimate least disturbed by
  # other jobs on a shared machine; the medians' spread is reported beside it.
  rows.append(_common.record(
      'inat_sweep/closed_form_spread', 'max_over_min_step_time', max(mins) / min(mins), 'x',
      spread_of_medians=max(medians) / min(medians), classes_present=list(SWEEP),
      min_ms=[round(x, 1) for x in mins], median_ms=[round(x, 1) for x in medians],
      same_compiled_program=len(programs) == 1,
      timing_spread_within_1_15=bool(max(mins) / min(mins) <= 1.15),
      target='flat: one compiled program for every point (exact), and the fastest steps '
      'within 1.15x of each other (timing, subject to machine noise)',
      target_met=bool(len(programs) == 1 and max(mins) / min(mins) <= 1.15)))
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  quiet = _common.wait_for_quiet(max_wait_s=args.max_wait)
  if not quiet['quiet']:
    log(f'WARNING: load average still {quiet["load_after"]:.2f}; busy: '
        f'{_common.busy_processes()}')
  import jax  # pylint: disable=g-import-not-at-top
  if args.compile_cache:  # Re-runs skip most compiles; compile_plus_first_step_s shrinks.
    jax.config.update('jax_compilation_cache_dir', args.compile_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  log(f'jax {jax.__version__} on {jax.devices()[0].device_kind} x{len(jax.devices())}')
  args.on_gpu = jax.default_backend() != 'cpu'
  if args.steps_per_sample is None:
    args.steps_per_sample = 5 if args.on_gpu else 1
  Runner.steps = args.steps_per_sample
  t0 = time.perf_counter()
  rows = []
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
  for case in args.cases:
    if case.startswith('resnet32_'):
      new = run_resnet(int(case.split('_')[1]), args)
    elif case == 'inat_head':
      new = run_inat_head(args)
    else:
      new = run_sweep(args)
    for r in new:
      r.update(case=case, measured=now, load_at_case_end=_common.load_average())
      _common.emit(r)
    rows += new
  elapsed = time.perf_counter() - t0
  log(f'done in {elapsed:.0f}s (after the load wait)')
  kept_from = {}
  if args.merge and os.path.exists(args.out):
    with open(args.out) as f:
      kept = [r for r in json.load(f)['results'] if r.get('case') not in args.cases]
    kept_from = {r['case']: r.get('measured') for r in kept}
    log(f'--merge: kept {len(kept)} rows of other cases from {args.out}')
    rows = kept + rows
  if not args.no_write:
    path = _common.write_results(
        args.out, rows,
        settings={'flat_ratio': FLAT_RATIO, 'noise_ratio': NOISE_RATIO, 'radius': 'official',
                  'lr': LR, 'momentum': MOMENTUM, 'weight_decay': WEIGHT_DECAY,
                  'repeats': args.repeats, 'cases': args.cases, 'inat': INAT,
                  'compile_cache': args.compile_cache, 'full_loop': args.full_loop,
                  'full_vmapped': args.full_vmapped, 'sam_rho': SAM_RHO,
                  'steps_per_sample': args.steps_per_sample,
                  'default_repeats': {k: v[args.on_gpu] for k, v in REPEATS.items()}},
        load={'wait': quiet, 'load_at_end': _common.load_average(),
              'busy_at_end': _common.busy_processes()},
        elapsed_s=round(elapsed, 1),
        # Cases whose rows come from an earlier run (--merge): case -> when measured.
        merged_rows_from_earlier_runs=kept_from)
    log(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
