"""Cost of a CC-SAM stage-1 step relative to a plain SGD step, measured in one process.

Every ltjax variant is the library's own train step: ``ltjax.train.
make_train_step`` on a ``create_train_state`` state with
``ltjax.optim.torch_sgd`` (momentum 0.9, wd 2e-4) and the objective
``ltjax.losses.build_objective`` builds from ``configs/base.py`` (mean
cross-entropy; for CC-SAM ``config.cc_sam`` with flat_ratio 0.5, the official
radius, noise_ratio 1e-6, and ``implementation`` set), so a change to the
library is what this benchmark measures. The total loss of CC-SAM is
(1 - r) * clean + r * flat:

  sgd          the plain step (mean CE), the baseline of every ratio;
  sam          (ResNet-32 only) ``make_train_step(..., sam=True)`` with
               ``ltjax.optim.sam(torch_sgd, rho=0.05)``: a second
               forward-backward at the perturbed weights (its BatchNorm
               statistics discarded), i.e. the usual ~2x;
  closed_form  cc_sam.implementation='closed_form' (``head_flat_loss`` in the
               same jitted step, one backward): B x B Gram matrices,
               O(B^2 (d + C)) extra;
  vmapped      cc_sam.implementation='vmap' (``head_flat_loss_vmap``, i.e.
               ``generic_flat_loss`` on the head): per-class VJPs and perturbed
               forwards, vmapped over chunks of 8 classes;
  loop         NOT library code: a hand-written emulation of the official
               PyTorch code's structure (zzpustc/CC-SAM, train_cifar.py
               ``train()``; docs/references.md, 'CC-SAM: stage 1'), the
               baseline the library's implementations replace. A Python loop over the
               classes present, each with its own gradient, radius, perturbed
               head and flat CE on its samples. ResNet-32: an objective
               unrolled over the classes inside ``make_train_step`` (the labels
               are static, so it compiles per label set; here the batch is
               fixed). iNat head: per-class jitted calls dispatched from Python
               as the official code runs (``HeadLoopRunner``; unrolling 400
               classes takes minutes to compile and keeps 400 perturbed (d, C)
               kernels alive, 27 GB). Both gather each class's rows before its
               gradient, whereas the official code back-propagates every class
               through the full-batch logits (a B x d x C product per class): a
               *favourable* version of the loop.

Cases:
  resnet32_64, resnet32_512
               ``build_model({'name': 'resnet32', 'head': 'linear'}, 100)``,
               random 32x32x3 inputs, BatchNorm in train mode. The flat loss's
               extra work (d = 64, C = 100) is far below the noise of a full
               step here, so the head part is also timed alone at the same
               shapes (200 interleaved repeats, the head model below):
               ``*_head_extra`` rows give its extra ms and the implied
               full-step ratio.
  inat_head    the head alone at iNaturalist scale: batch 512, d = 2048,
               C = 8142, 400 classes present. The model is a
               ``models.Classifier`` whose backbone is a stand-in,
               ``FeatureInput`` (features = x * s with one learned (d,) scale
               s), fed the (post-ReLU, random) features as its input: the real
               train step then differentiates w.r.t. the head AND the features,
               the part of a full stage-1 step the head owns (dF is what the
               backbone receives), for one extra (B, d) product. sgd and
               closed_form are timed interleaved at 400 classes present. The
               loop is timed at 5 and 20 classes present and extrapolated
               linearly to 400 (``--full-loop`` also times it there, ~3 min);
               the vmapped path (~5 B x d x C products per class) is timed at
               one 8-class chunk and extrapolated to 50 chunks. Extrapolated
               rows say so.
  inat_sweep   the closed form at 10, 50, 100, 200, 400, 500 classes present
               (same shapes), all timed interleaved with one SGD step: its
               cost must not depend on the number of classes present (and every
               point must be the same compiled program).

``ratio`` divides medians; ``ratio_min`` divides the fastest steps, which on a
machine shared with other jobs is the better estimate of the intrinsic cost.

Loss check: the variants of a case start from the same weights (same seed) on
the same batch, so their first steps' losses must agree: closed_form, vmapped
and loop (ResNet-32; the iNat head compares the vmapped step at 8 classes
present with a closed-form step there). A ``<case>/loss_check`` row gives the
losses and their largest relative difference (tolerance 1e-4; a warning on
stderr when it is exceeded or a loss is not finite). With noise_ratio 1e-6 the
perturbation barely moves the loss, so this checks the wiring; the
implementations' equality in value and gradient is tested in tests/.

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
  python benchmarks/cc_sam_cost.py --quick    # ResNet-32 batch 64 only, ~2 min, not written
  python benchmarks/cc_sam_cost.py --cases resnet32_64 inat_head inat_sweep   # ~5 min
  python benchmarks/cc_sam_cost.py --cases inat_sweep --merge   # re-run one case, keep the rest
  python benchmarks/cc_sam_cost.py --quick --cases inat_head inat_sweep \
      --inat-shape 64 128 1000 40             # the head cases scaled down: a smoke test
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
import math
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import _common
from _common import log
from configs import base
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.models import heads
from ltjax.train import sharding

# pylint: enable=g-import-not-at-top,wrong-import-position

FLAT_RATIO, NOISE_RATIO, RADIUS = 0.5, 1e-6, 'official'
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 2e-4
SAM_RHO = 0.05
SEED = 0
INAT = dict(batch=512, dim=2048, classes=8142, present=400)
SWEEP = (10, 50, 100, 200, 400, 500)
ALL_CASES = ('resnet32_64', 'resnet32_512', 'inat_head', 'inat_sweep')
# Variant (row name) -> config.cc_sam.implementation.
CC_SAM_VARIANTS = {'closed_form': 'closed_form', 'vmapped': 'vmap'}
# Largest relative difference of the variants' first-step losses (loss_check).
LOSS_RTOL = 1e-4
# Default timed rounds per case: (CPU, GPU).
REPEATS = {
    'resnet32_64': (5, 30),
    'resnet32_512': (2, 20),
    'inat_head': (4, 20),
    'inat_sweep': (10, 20),
    'head_extra': (200, 200),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
      '--quick',
      action='store_true',
      help='ResNet-32 at batch 64 only (~2 min on CPU); not written unless --out.',
  )
  p.add_argument('--cases', nargs='+', choices=ALL_CASES, default=None)
  p.add_argument('--repeats', type=int, default=None, help='Timed rounds per case.')
  p.add_argument('--max-wait', type=float, default=120.0, help='Seconds to wait for quiet.')
  p.add_argument(
      '--out',
      default=None,
      help='Results file (default benchmarks/results/cc_sam_cost.json; --quick: '
      'none unless given).',
  )
  p.add_argument('--no-write', action='store_true', help='Do not write the results file.')
  p.add_argument(
      '--compile-cache',
      default=os.path.join(
          os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '.jax_cache'
      ),
      help="JAX's persistent compilation cache ('' = off).",
  )
  p.add_argument(
      '--merge',
      action='store_true',
      help='Keep the rows of cases not run now from the existing results file '
      '(each row records its case and when it was measured).',
  )
  p.add_argument(
      '--full-loop',
      action='store_true',
      help='Also time the per-class loop at 400 classes present (~3 min on CPU).',
  )
  p.add_argument(
      '--full-vmapped',
      action='store_true',
      help='Also time the vmapped path at 400 classes present (hours on CPU; ' 'for a GPU).',
  )
  p.add_argument(
      '--steps-per-sample',
      type=int,
      default=None,
      help='Steps run back to back per timed sample, blocking after the last '
      '(default: 1 on CPU, 5 on a GPU); times are per step.',
  )
  p.add_argument(
      '--inat-shape',
      type=int,
      nargs=4,
      default=None,
      metavar=('BATCH', 'DIM', 'CLASSES', 'PRESENT'),
      help='Shapes of the inat_head / inat_sweep cases (default '
      f'{" ".join(str(v) for v in INAT.values())}); smaller ones make a smoke test '
      '(PRESENT >= 20; sweep points above min(BATCH, CLASSES) are dropped).',
  )
  args = p.parse_args(argv)
  if args.cases is None:
    args.cases = ['resnet32_64'] if args.quick else list(ALL_CASES)
  args.inat = dict(INAT) if args.inat_shape is None else dict(zip(INAT, args.inat_shape))
  if args.inat['present'] < 20 or args.inat['present'] > min(
      args.inat['batch'], args.inat['classes']
  ):
    p.error('--inat-shape: PRESENT must be >= 20 and <= min(BATCH, CLASSES)')
  if args.out is None:
    args.no_write = args.no_write or args.quick
    args.out = os.path.join(_common.RESULTS_DIR, 'cc_sam_cost.json')
  return args


# ----------------------------------------------------------------------------
# Objectives: the library's, and the hand-written per-class loop baseline.


def make_objective(kind: str, counts: np.ndarray):
  """``ltjax.losses.build_objective`` of variant ``kind`` (CE; + CC-SAM's flat loss)."""
  config = base.get_config()
  if kind in CC_SAM_VARIANTS:
    config.cc_sam.flat_ratio = FLAT_RATIO
    config.cc_sam.noise_ratio = NOISE_RATIO
    config.cc_sam.radius = RADIUS
    config.cc_sam.implementation = CC_SAM_VARIANTS[kind]
  return losses.build_objective(
      config.loss,
      counts,
      steps_per_epoch=1,
      num_epochs=1,
      cc_sam_config=config.cc_sam,
      head='linear',
  )


def _official_eps(grads, theta, num_params: int, n_minus_one):
  """The official radius per tensor: eps = |eps| g / |g| (0 for a zero gradient)."""
  eps = []
  for g in grads:
    norm = jnp.sqrt(jnp.sum(g**2))
    size = (
        NOISE_RATIO
        * jnp.sqrt(theta / (2 * norm))
        * (num_params / jnp.maximum(n_minus_one, 1.0)) ** 0.25
    )
    eps.append(
        jax.lax.stop_gradient(jnp.where(norm > 0, size / jnp.where(norm > 0, norm, 1.0), 0.0) * g)
    )
  return eps


def per_class_loop_objective(labels_np: np.ndarray, counts: np.ndarray):
  """BASELINE, not library code: the official per-class loop as an objective.

  The library's mean CE plus, unrolled over the classes of the fixed batch
  ``labels_np``, one gradient, radius, perturbed head and flat CE per class
  (docs/references.md, 'CC-SAM: stage 1'). It plugs into ``make_train_step``
  like any objective, so only the flat loss differs from the library variants.
  """
  clean_objective = make_objective('sgd', counts)
  classes = [(int(c), np.flatnonzero(labels_np == c)) for c in np.unique(labels_np)]
  sg = jax.lax.stop_gradient
  ce = losses.softmax_cross_entropy  # Per-example (B,).

  def objective(logits, labels, *, features, head_params, head_fn=None, step, mixup=None):
    clean, metrics = clean_objective(
        logits,
        labels,
        features=features,
        head_params=head_params,
        head_fn=head_fn,
        step=step,
        mixup=mixup,
    )
    w, b = head_params['kernel'], head_params['bias']
    theta = sg(jnp.sqrt(jnp.sum(w**2) + jnp.sum(b**2))) + 1e-12
    f_const, flat = sg(features), 0.0
    for c, idx in classes:
      y_c = labels[idx]
      grads = jax.grad(lambda p, idx=idx, y_c=y_c: jnp.mean(ce(f_const[idx] @ p[0] + p[1], y_c)))(
          (sg(w), sg(b))
      )
      eps = _official_eps(grads, theta, w.size + b.size, float(counts[c] - 1))
      flat = flat + jnp.sum(ce(features[idx] @ (w + eps[0]) + b + eps[1], y_c))
    flat = flat / features.shape[0]
    loss = (1 - FLAT_RATIO) * clean + FLAT_RATIO * flat
    return loss, dict(metrics, cc_sam_flat_loss=flat)

  return objective


# ----------------------------------------------------------------------------
# Models, data and steps.


class FeatureInput(nn.Module):
  """Stand-in backbone of the head cases: features = x * s, s a (d,) parameter (init 1).

  Its input is the feature batch; the one parameter makes the train step
  differentiate the features as it would through a real backbone.
  """

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    del train
    return x * self.param('scale', nn.initializers.ones, (x.shape[-1],))


def head_model(classes: int) -> models.Classifier:
  return models.Classifier(backbone=FeatureInput(), head=heads.LinearHead(num_classes=classes))


def cifar100_lt_counts(classes: int = 100) -> np.ndarray:
  """CIFAR-100-LT IR 100 training counts (500 -> 5)."""
  return np.array([int(500 * 0.01 ** (c / (classes - 1))) for c in range(classes)])


def head_counts(classes: int) -> np.ndarray:
  """CIFAR-100-LT counts for the ResNet-32 head, else a 1000 -> 2 long tail."""
  if classes == 100:
    return cifar100_lt_counts()
  return np.array([max(2, int(1000 * 0.002 ** (k / (classes - 1)))) for k in range(classes)])


def inat_labels(present: int, batch: int, classes: int, rng) -> np.ndarray:
  """``batch`` labels with exactly ``present`` distinct classes out of ``classes``."""
  chosen = rng.choice(classes, present, replace=False)
  labels = np.concatenate([chosen, rng.choice(chosen, batch - present)])
  rng.shuffle(labels)
  return labels.astype(np.int32)


def sgd_tx() -> optax.GradientTransformation:
  return optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


class Runner:
  """``make_train_step``'s step with its own (donated) state, on a fixed batch.

  A call runs ``Runner.steps`` steps back to back and blocks on the last one's
  outputs (``steps`` is set by ``main``: 1 on CPU, more on a GPU, where
  dispatch then overlaps device work as in a training loop); timings are
  divided by it (``per_step``). The first step (trace, compile, run) is timed
  as ``compile_s`` and its loss kept as ``first_loss``.
  """

  steps = 1

  def __init__(self, step, state, batch):
    self.step, self.state, self.batch = step, state, batch
    t0 = time.perf_counter()
    metrics = self._run(1)
    self.compile_s = time.perf_counter() - t0
    self.first_loss = float(metrics['loss'])

  def _run(self, n):
    for _ in range(n):
      self.state, metrics = self.step(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return metrics

  def __call__(self):
    self._run(self.steps)


def train_runner(model, kind: str, batch, counts, mesh, *, input_shape, labels_np=None) -> Runner:
  """The library's train step of variant ``kind`` ('loop': the baseline objective)."""
  tx = optim.sam(sgd_tx(), rho=SAM_RHO) if kind == 'sam' else sgd_tx()
  state = train.create_train_state(model, tx, input_shape=input_shape, seed=SEED, mesh=mesh)
  if kind == 'loop':
    objective = per_class_loop_objective(labels_np, counts)
  else:
    objective = make_objective(kind, counts)
  step = train.make_train_step(state, mesh, objective=objective, sam=kind == 'sam')
  return Runner(step, state, batch)


def per_step(times: dict[str, list[float]], runners) -> dict[str, list[float]]:
  """Divides each runner's sample durations by the steps one sample runs."""
  return {k: [t / runners[k].steps for t in v] for k, v in times.items()}


def resnet_runners(batch: int, kinds, mesh, seed: int = SEED):
  """ResNet-32 (100 classes) runners on one random batch; also the classes present."""
  classes = 100
  model = models.build_model(
      ml_collections.ConfigDict({'name': 'resnet32', 'head': 'linear'}), classes
  )
  rng = np.random.default_rng(seed)
  images = rng.standard_normal((batch, 32, 32, 3)).astype(np.float32)
  labels_np = rng.integers(0, classes, batch).astype(np.int32)
  data = sharding.to_global({'image': images, 'label': labels_np}, mesh)
  counts = cifar100_lt_counts(classes)
  out = {}
  for kind in kinds:
    log(f'[resnet32 batch {batch}] compiling {kind}')
    out[kind] = train_runner(
        model, kind, data, counts, mesh, input_shape=(32, 32, 3), labels_np=labels_np
    )
  return out, int(len(np.unique(labels_np)))


def head_runners(
    present: int, kinds, mesh, *, batch: int, dim: int, classes: int, seed: int = SEED
) -> dict[str, Any]:
  """Head-model runners (``head_model``): ``present`` classes in a batch of features."""
  features = np.abs(np.random.default_rng(seed).standard_normal((batch, dim))).astype(
      np.float32
  )  # Post-ReLU features; the same for every number of classes present.
  labels_np = inat_labels(present, batch, classes, np.random.default_rng(seed + present))
  data = sharding.to_global({'image': features, 'label': labels_np}, mesh)
  counts = head_counts(classes)
  model = head_model(classes)
  out = {}
  for kind in kinds:
    log(f'[head {batch}x{dim}x{classes}, {present} classes present] compiling {kind}')
    if kind == 'loop':
      out[kind] = HeadLoopRunner(model, data, labels_np, counts, mesh)
    else:
      out[kind] = train_runner(model, kind, data, counts, mesh, input_shape=(dim,))
  return out


class HeadLoopRunner:
  """BASELINE, not library code: the official loop as the official code runs it.

  Per-class calls from Python: one jitted clean step (loss and gradients
  w.r.t. the head and the features), then for every class present a jitted
  per-class call (its gradient from its own rows, radius, perturbed head, flat
  CE and that CE's gradients, accumulated into donated buffers), then the SGD
  update. Class sizes are padded to powers of two so only a few per-class
  shapes compile. Unrolling ~400 classes into one jitted step instead takes
  minutes to compile and keeps every class's perturbed (d, C) kernel alive for
  the backward (27 GB here). Starts from the head the train states get.
  """

  def __init__(self, model, data, labels_np, counts, mesh):
    tx = sgd_tx()
    head = train.create_train_state(
        model, tx, input_shape=data['image'].shape[1:], seed=SEED, mesh=mesh
    ).params['head']
    self.labels_np, self.counts = labels_np, counts
    self.features, self.labels = data['image'], data['label']
    self.state = (head, tx.init(head))
    batch = self.features.shape[0]
    ce = losses.softmax_cross_entropy  # Per-example (B,).

    @jax.jit
    def clean_step(head, f, y):
      loss_fn = lambda p, x: (1 - FLAT_RATIO) * jnp.mean(ce(x @ p['kernel'] + p['bias'], y))
      loss, (g_head, d_f) = jax.value_and_grad(loss_fn, argnums=(0, 1))(head, f)
      theta = jnp.sqrt(jnp.sum(head['kernel'] ** 2) + jnp.sum(head['bias'] ** 2)) + 1e-12
      return (g_head['kernel'], g_head['bias'], d_f, loss), theta

    @functools.partial(jax.jit, donate_argnums=(0,))
    def class_step(acc, head, f, y, idx, valid, n_minus_one, theta):
      w, b = head['kernel'], head['bias']
      f_c, y_c = f[idx], y[idx]
      m = jnp.sum(valid)
      class_mean = lambda p: jnp.sum(jnp.where(valid, ce(f_c @ p[0] + p[1], y_c), 0.0)) / m
      eps = _official_eps(jax.grad(class_mean)((w, b)), theta, w.size + b.size, n_minus_one)
      flat = lambda p, x: jnp.sum(
          jnp.where(valid, ce(x @ (p[0] + eps[0]) + p[1] + eps[1], y_c), 0.0)
      )
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
    acc = self._one_step()
    jax.block_until_ready((self.state, acc))
    self.compile_s = time.perf_counter() - t0
    self.first_loss = float(acc[3])
    self.steps = Runner.steps

  def __call__(self):
    for _ in range(self.steps):
      acc = self._one_step()
    jax.block_until_ready((self.state, acc))

  def _one_step(self):
    head = self.state[0]
    acc, theta = self.clean_step(head, self.features, self.labels)
    for c in np.unique(self.labels_np):  # Host-side grouping, as the official loop.
      idx = np.flatnonzero(self.labels_np == c)
      pad = 1 << int(np.ceil(np.log2(idx.size)))
      valid = np.arange(pad) < idx.size
      acc = self.class_step(
          acc,
          head,
          self.features,
          self.labels,
          jnp.asarray(np.resize(idx, pad) * valid),
          jnp.asarray(valid),
          jnp.asarray(float(self.counts[c] - 1)),
          theta,
      )
    self.state = self.update(self.state, acc[0], acc[1])
    return acc


# ----------------------------------------------------------------------------
# Measurement.


def loss_check(case: str, first_losses: dict[str, float]) -> dict[str, Any]:
  """The ``<case>/loss_check`` row: first-step losses of one batch and weights agree."""
  ref = first_losses['closed_form']
  finite = all(math.isfinite(v) for v in first_losses.values())
  rel = max(abs(v - ref) / max(abs(ref), 1e-30) for v in first_losses.values())
  ok = bool(finite and rel <= LOSS_RTOL)
  log(
      f'[{case}] loss check (first step, same batch and weights): '
      + ', '.join(f'{k} {v:.8g}' for k, v in first_losses.items())
      + f'; max relative difference {rel:.2e} -> {"OK" if ok else "WARNING: MISMATCH"}'
  )
  return _common.record(
      f'{case}/loss_check',
      'first_step_loss_max_rel_diff',
      rel,
      'relative',
      losses=first_losses,
      finite=finite,
      tolerance=LOSS_RTOL,
      target_met=ok,
  )


def measure(runners: dict[str, Any], repeats: int, case: str, extra: dict[str, Any]):
  # Runners already ran (compiled) one step each: no extra warm-up round.
  times = per_step(_common.time_interleaved(runners, repeats=repeats, warmup=0), runners)
  stats = {k: _common.summarize(v) for k, v in times.items()}
  base_ms = stats['sgd']['median_ms']
  rows = []
  for kind, s in stats.items():
    rows.append(
        _common.record(
            f'{case}/{kind}',
            'step_time',
            s['median_ms'],
            'ms',
            ratio=s['median_ms'] / base_ms if kind != 'sgd' else 1.0,
            ratio_min=s['min_ms'] / stats['sgd']['min_ms'],
            reference=f'{case}/sgd',
            min_ms=s['min_ms'],
            p25_ms=s['p25_ms'],
            p75_ms=s['p75_ms'],
            n=s['n'],
            compile_plus_first_step_s=runners[kind].compile_s,
            first_step_loss=runners[kind].first_loss,
            steps_per_sample=runners[kind].steps,
            **extra,
        )
    )
  return rows


def default_repeats(case: str, args) -> int:
  return args.repeats or REPEATS[case][args.on_gpu]


def run_resnet(batch: int, args, mesh) -> list[dict]:
  kinds = ('sgd', 'sam', 'closed_form', 'vmapped', 'loop')
  runners, present = resnet_runners(batch, kinds, mesh)
  case = f'resnet32_b{batch}'
  check = loss_check(case, {k: runners[k].first_loss for k in ('closed_form', 'vmapped', 'loop')})
  rows = measure(
      runners,
      default_repeats(f'resnet32_{batch}', args),
      case,
      {'batch': batch, 'classes_present': present},
  )
  for r in rows:
    if r['name'].endswith('closed_form'):
      r['target'] = '<= 1.3x sgd'
      r['target_met'] = bool(r['ratio'] <= 1.3)
    if r['name'].endswith('/sam'):
      r['rho'] = SAM_RHO
  rows.append(check)
  del runners
  # The head's share is far below the timing noise of a full step, so time
  # the head part alone at these shapes (many cheap repeats) and add its
  # extra cost to the full SGD step: the implied ratio, free of that noise.
  full_sgd = next(r['value'] for r in rows if r['name'].endswith('/sgd'))
  head = head_runners(
      present, ('sgd', 'closed_form', 'vmapped'), mesh, batch=batch, dim=64, classes=100
  )
  rows.append(
      loss_check(f'{case}_head', {k: head[k].first_loss for k in ('closed_form', 'vmapped')})
  )
  n_head = REPEATS['head_extra'][args.on_gpu]
  times = per_step(_common.time_interleaved(head, repeats=n_head, warmup=0), head)
  med = {k: _common.summarize(v)['median_ms'] for k, v in times.items()}
  for kind in ('closed_form', 'vmapped'):
    extra = med[kind] - med['sgd']
    rows.append(
        _common.record(
            f'{case}/{kind}_head_extra',
            'extra_step_time',
            extra,
            'ms',
            head_sgd_ms=med['sgd'],
            head_ms=med[kind],
            implied_ratio=(full_sgd + extra) / full_sgd,
            reference=f'{case}/sgd',
            n=n_head,
            batch=batch,
            classes_present=present,
        )
    )
  return rows


def _single(runner, repeats: int) -> float:
  """Median ms of ``repeats`` sequential steps (for steps too slow to interleave)."""
  times = _common.time_interleaved({'x': runner}, repeats=repeats, warmup=0)['x']
  return float(np.median(times)) * 1e3 / runner.steps


def run_inat_head(args, mesh) -> list[dict]:
  shape = {k: args.inat[k] for k in ('batch', 'dim', 'classes')}
  present = args.inat['present']
  rows = []
  runners = head_runners(present, ('sgd', 'closed_form'), mesh, **shape)
  extra = dict(shape, classes_present=present)
  head_rows = measure(runners, default_repeats('inat_head', args), 'inat_head', extra)
  for r in head_rows:
    if r['name'].endswith('closed_form'):
      r['target'] = '<= 1.5x head-only sgd'
      r['target_met'] = bool(r['ratio'] <= 1.5)
  rows += head_rows
  base_ms = next(r['value'] for r in head_rows if r['name'].endswith('/sgd'))
  del runners

  def point(kind, n_present, repeats):
    runner = head_runners(n_present, (kind,), mesh, **shape)[kind]
    ms = _single(runner, repeats)
    rows.append(
        _common.record(
            f'inat_head_{n_present}_present/{kind}',
            'step_time',
            ms,
            'ms',
            ratio=ms / base_ms,
            reference='inat_head/sgd',
            n=repeats,
            classes_present=n_present,
            compile_plus_first_step_s=runner.compile_s,
            first_step_loss=runner.first_loss,
        )
    )
    return ms, runner.first_loss

  # The loop costs a fixed part plus one per-class call per class present:
  # measured at two points, extrapolated to `present` (or measured there: --full-loop).
  lo, hi = 5, 20
  (t_lo, _), (t_hi, _) = point('loop', lo, 2), point('loop', hi, 2)
  slope = (t_hi - t_lo) / (hi - lo)
  estimate = t_lo + slope * (present - lo)
  rows.append(
      _common.record(
          'inat_head/loop',
          'step_time',
          estimate,
          'ms',
          ratio=estimate / base_ms,
          reference='inat_head/sgd',
          extrapolated=f'linear from {lo} and {hi} classes present',
          per_class_ms=slope,
          **extra,
      )
  )
  if args.full_loop:
    point('loop', present, 3 if args.on_gpu else 1)
  # vmapped: one lax.map chunk of class_chunk = 8 classes; the cost is linear
  # in the number of non-empty chunks, ceil(present / 8) (50 at 400 present).
  t_chunk, vmapped_loss = point('vmapped', 8, 1)
  chunks = -(-present // 8)
  estimate = base_ms + (t_chunk - base_ms) * chunks
  rows.append(
      _common.record(
          'inat_head/vmapped',
          'step_time',
          estimate,
          'ms',
          ratio=estimate / base_ms,
          reference='inat_head/sgd',
          extrapolated=f'sgd + {chunks} x (one 8-class chunk step - sgd)',
          **extra,
      )
  )
  closed_form = head_runners(8, ('closed_form',), mesh, **shape)['closed_form']  # Check only.
  rows.append(
      loss_check(
          'inat_head_8_present', {'closed_form': closed_form.first_loss, 'vmapped': vmapped_loss}
      )
  )
  del closed_form
  if args.full_vmapped:
    point('vmapped', present, 3)
  return rows


def run_sweep(args, mesh) -> list[dict]:
  """One SGD step and a closed-form step per point, all timed interleaved.

  The SGD step's cost does not depend on the labels, so one serves every
  point; interleaving all points makes their times comparable on a noisy
  machine (the closed form's per-point times are the flatness check).
  """
  shape = {k: args.inat[k] for k in ('batch', 'dim', 'classes')}
  sweep = [p for p in SWEEP if p <= min(shape['batch'], shape['classes'])]
  runners = head_runners(sweep[0], ('sgd',), mesh, **shape)
  for present in sweep:
    runners[f'closed_form_{present}'] = head_runners(present, ('closed_form',), mesh, **shape)[
        'closed_form'
    ]
  # Same shapes, labels as data: every point should compile to the same program.
  programs = {
      hashlib.sha256(r.step.lower(r.state, r.batch).as_text().encode()).hexdigest()
      for k, r in runners.items()
      if k != 'sgd'
  }
  times = per_step(
      _common.time_interleaved(runners, repeats=default_repeats('inat_sweep', args), warmup=0),
      runners,
  )
  stats = {k: _common.summarize(v) for k, v in times.items()}
  base_stats = stats['sgd']
  rows = [
      _common.record(
          'inat_sweep/sgd',
          'step_time',
          base_stats['median_ms'],
          'ms',
          ratio=1.0,
          min_ms=base_stats['min_ms'],
          n=base_stats['n'],
          first_step_loss=runners['sgd'].first_loss,
      )
  ]
  for present in sweep:
    st = stats[f'closed_form_{present}']
    rows.append(
        _common.record(
            f'inat_sweep_{present}_present/closed_form',
            'step_time',
            st['median_ms'],
            'ms',
            ratio=st['median_ms'] / base_stats['median_ms'],
            ratio_min=st['min_ms'] / base_stats['min_ms'],
            reference='inat_sweep/sgd',
            min_ms=st['min_ms'],
            p25_ms=st['p25_ms'],
            p75_ms=st['p75_ms'],
            n=st['n'],
            classes_present=present,
            first_step_loss=runners[f'closed_form_{present}'].first_loss,
        )
    )
  medians = [stats[f'closed_form_{p}']['median_ms'] for p in sweep]
  mins = [stats[f'closed_form_{p}']['min_ms'] for p in sweep]
  # The fastest of the interleaved steps is the estimate least disturbed by
  # other jobs on a shared machine; the medians' spread is reported beside it.
  rows.append(
      _common.record(
          'inat_sweep/closed_form_spread',
          'max_over_min_step_time',
          max(mins) / min(mins),
          'x',
          spread_of_medians=max(medians) / min(medians),
          classes_present=list(sweep),
          min_ms=[round(x, 1) for x in mins],
          median_ms=[round(x, 1) for x in medians],
          same_compiled_program=len(programs) == 1,
          timing_spread_within_1_15=bool(max(mins) / min(mins) <= 1.15),
          target='flat: one compiled program for every point (exact), and the fastest steps '
          'within 1.15x of each other (timing, subject to machine noise)',
          target_met=bool(len(programs) == 1 and max(mins) / min(mins) <= 1.15),
      )
  )
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  quiet = _common.wait_for_quiet(max_wait_s=args.max_wait)
  if not quiet['quiet']:
    log(
        f'WARNING: load average still {quiet["load_after"]:.2f}; busy: '
        f'{_common.busy_processes()}'
    )
  if args.compile_cache:  # Re-runs skip most compiles; compile_plus_first_step_s shrinks.
    jax.config.update('jax_compilation_cache_dir', args.compile_cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)
  mesh = sharding.make_mesh()
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
      new = run_resnet(int(case.split('_')[1]), args, mesh)
    elif case == 'inat_head':
      new = run_inat_head(args, mesh)
    else:
      new = run_sweep(args, mesh)
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
        args.out,
        rows,
        settings={
            'step': 'ltjax.train.make_train_step + ltjax.losses.build_objective '
            '(loop: hand-written baseline)',
            'flat_ratio': FLAT_RATIO,
            'noise_ratio': NOISE_RATIO,
            'radius': RADIUS,
            'lr': LR,
            'momentum': MOMENTUM,
            'weight_decay': WEIGHT_DECAY,
            'repeats': args.repeats,
            'cases': args.cases,
            'inat': args.inat,
            'compile_cache': args.compile_cache,
            'full_loop': args.full_loop,
            'full_vmapped': args.full_vmapped,
            'sam_rho': SAM_RHO,
            'steps_per_sample': args.steps_per_sample,
            'loss_rtol': LOSS_RTOL,
            'default_repeats': {k: v[args.on_gpu] for k, v in REPEATS.items()},
        },
        load={
            'wait': quiet,
            'load_at_end': _common.load_average(),
            'busy_at_end': _common.busy_processes(),
        },
        elapsed_s=round(elapsed, 1),
        # Cases whose rows come from an earlier run (--merge): case -> when measured.
        merged_rows_from_earlier_runs=kept_from,
    )
    log(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
