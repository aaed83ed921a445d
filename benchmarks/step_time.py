"""Train-step time and compile time of the real ltjax train step, next to PyTorch eager.

Cases (``--cases``):

  resnet32       CIFAR ResNet-32 (option-A shortcuts, [5, 5, 5]), batch 128 of
                 32x32x3, 100 classes.
  resnet32_b512  the same at batch 512 (a size that fills a GPU better).
  small_cnn      ltjax's SmallCNN, batch 64 of 28x28x1, 10 classes.
  resnet50       torchvision-style ResNet-50, batch 128 of 224x224x3, 1000
                 classes, float32 (PyTorch twin: torchvision.models.resnet50,
                 skipped where torchvision is missing). For a GPU.
  resnet50_bf16  the same with a bfloat16 backbone (``build_model(...,
                 dtype=jnp.bfloat16)``: float32 parameters, head and logits);
                 PyTorch runs under ``torch.autocast(dtype=torch.bfloat16)``.

On a GPU (JAX backend 'gpu', PyTorch on 'cuda' when it sees one):
``--steps-per-sample`` (default 10 there, 1 on CPU) steps run back to back per
timed sample, which ends with ``jax.block_until_ready`` /
``torch.cuda.synchronize()``, and the sample is divided by that count (the
training loop's throughput, host dispatch overlapping device work);
``torch.backends.cudnn.benchmark`` is on (XLA autotunes its convolutions
too); float32 convolutions may use TF32 on both sides (the frameworks'
defaults, recorded in the results' machine info); JAX may take at most
``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default here 0.45) of the GPU memory so
that PyTorch fits beside it. ``--torch-channels-last`` adds PyTorch eager in
channels_last (NHWC, cuDNN's fast layout) and ``--torch-compile`` PyTorch with
``torch.compile(model)`` (inductor; compile time reported), each as its own
row, with the JAX step's ratio to them on the JAX row.

JAX side: ``ltjax.models.build_model`` + ``ltjax.train.create_train_state`` +
``ltjax.train.make_train_step`` with ``ltjax.optim.torch_sgd(0.1, momentum=0.9,
weight_decay=5e-4)`` and mean softmax cross-entropy, on the mesh of
``ltjax.train.sharding.make_mesh()``. The compile time is that of
``step.lower(...).compile()`` (tracing and lowering reported separately); the
step time is the median over timed steps after warm-up, each ended by
``jax.block_until_ready`` on the new state and the metrics.

PyTorch side (when torch imports): the same architecture in eager mode, train
mode, ``torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)`` and
``nn.CrossEntropyLoss``, same batch, NCHW, with ``torch.set_num_threads(cores)``.
JAX and PyTorch steps are interleaved round-robin in the same process, so load
drifts affect both alike. ``ratio`` = JAX time / PyTorch time.

``--investigate`` adds the experiments behind "Why JAX is slower than PyTorch"
in benchmarks/README.md: XLA:CPU compiler options, donation, the optimiser's
share, forward vs backward, NCHW, BatchNorm formulations, thread counts, a
profile of where the step's time goes and per-convolution micro-benchmarks.

Usage:
  python benchmarks/step_time.py                 # both cases, ~1-2 min
  python benchmarks/step_time.py --investigate   # + the experiments, ~5 min
  python benchmarks/step_time.py --quick         # < 1 min, not written to results/
  python benchmarks/step_time.py --cases resnet32 --no-torch

Every result is one JSON line on stdout (progress goes to stderr); the list is
also written to benchmarks/results/step_time.json with the machine and date.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import glob
import os
import re
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from _common import log  # pylint: disable=g-import-not-at-top,wrong-import-position

# On a GPU, JAX preallocates 75 % of the memory by default, which would leave
# PyTorch (same process) too little for ResNet-50. No effect on CPU.
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.45')

CASES = {
    'resnet32': dict(model='resnet32', batch=128, image=(32, 32, 3), classes=100),
    'resnet32_b512': dict(model='resnet32', batch=512, image=(32, 32, 3), classes=100),
    'small_cnn': dict(model='small_cnn', batch=64, image=(28, 28, 1), classes=10),
    'resnet50': dict(model='resnet50', batch=128, image=(224, 224, 3), classes=1000),
    'resnet50_bf16': dict(model='resnet50', batch=128, image=(224, 224, 3), classes=1000,
                          dtype='bfloat16'),
}
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4

# XLA:CPU compiler options tried by --investigate. They are DebugOptions fields
# passed per executable through ``.compile(compiler_options=...)`` (the same
# fields XLA_FLAGS=--<name>=<value> sets process-wide), so every variant runs
# in this process, interleaved with the baseline. A repeated enum field takes
# a single value this way ('' clears it); the '-individual_convolution' form
# is tested through XLA_FLAGS in a subprocess (RECOMMENDED_XLA_FLAGS).
_YNN = 'xla_cpu_experimental_ynn_fusion_type'
XLA_VARIANTS = {
    # In jaxlib 0.10 YNNPACK (XNNPACK's successor) takes convolutions with more
    # than 16 channels, dots and reductions by default.
    'xla: YNNPACK off entirely (Eigen convs, XLA reductions)': {_YNN: ''},
    'xla: YNNPACK for reductions only (Eigen convs)': {_YNN: 'LIBRARY_FUSION_TYPE_REDUCE'},
    'xla: oneDNN thunks on (xla_cpu_use_onednn)': {'xla_cpu_use_onednn': True},
    'xla: multi-threaded Eigen off': {'xla_cpu_multi_thread_eigen': False},
    'xla: HLO fusion pass disabled': {'xla_disable_hlo_passes': 'fusion'},
    'xla: HLO fusion pass disabled + Eigen convs': {
        'xla_disable_hlo_passes': 'fusion', _YNN: 'LIBRARY_FUSION_TYPE_REDUCE'},
    'xla: fast math on (changes rounding)': {'xla_cpu_enable_fast_math': True},
}
# What the README recommends for CPU training: YNNPACK keeps dots and
# reductions, convolutions go back to XLA's Eigen kernels.
RECOMMENDED_XLA_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
# Rows timed while other processes kept this many cores busy get 'noisy': true.
NOISY_CORES = 0.3


# ----------------------------------------------------------------------------
# PyTorch reference models (imported lazily so --no-torch never loads torch).


def _threads(n: int) -> str:
  return f'{n} thread' + ('s' if n != 1 else '')


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def build_torch_model(name: str, num_classes: int):
  """The PyTorch twin of the ltjax backbone ``name`` plus a linear head."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  class BasicBlockA(nn.Module):
    """Two 3x3 conv-BN layers; option-A shortcut as in the LDAM-DRW resnet32."""

    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.stride, self.extra = stride, cout - cin

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      s = x[:, :, ::self.stride, ::self.stride] if self.stride != 1 else x
      if self.extra:
        s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
      return F.relu(y + s)

  class CifarResNet(nn.Module):

    def __init__(self, stage_sizes=(5, 5, 5), widths=(16, 32, 64)):
      super().__init__()
      self.stem_conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
      self.stem_bn = nn.BatchNorm2d(widths[0])
      blocks, cin = [], widths[0]
      for s, (n, w) in enumerate(zip(stage_sizes, widths)):
        for b in range(n):
          blocks.append(BasicBlockA(cin, w, 2 if s > 0 and b == 0 else 1))
          cin = w
      self.blocks = nn.Sequential(*blocks)
      self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
      x = F.relu(self.stem_bn(self.stem_conv(x)))
      return self.head(self.blocks(x).mean((2, 3)))

  class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU x3 (32, 64, 128), 2x2 max-pool after the first two, GAP."""

    def __init__(self, in_channels=1, widths=(32, 64, 128), pool_after=(0, 1)):
      super().__init__()
      layers, cin = [], in_channels
      for i, w in enumerate(widths):
        layers += [nn.Conv2d(cin, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
        if i in pool_after:
          layers.append(nn.MaxPool2d(2, 2))
        cin = w
      self.features = nn.Sequential(*layers)
      self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
      return self.head(self.features(x).mean((2, 3)))

  if name == 'resnet50':  # torchvision's is ltjax's reference layout (v1.5).
    import torchvision  # pylint: disable=g-import-not-at-top
    return torchvision.models.resnet50(num_classes=num_classes)
  model = {'resnet32': CifarResNet, 'small_cnn': SmallCNN}[name]()
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight)
  del torch
  return model


def make_torch_step(case: dict[str, Any], *, threads: int, channels_last: bool = False,
                    seed: int = 0, device: str = 'cpu', steps: int = 1,
                    torch_compile: bool = False):
  """(blocking step callable, info) for the PyTorch twin of ``case``.

  One call runs ``steps`` optimiser steps and returns when they are done (on
  CUDA: ``torch.cuda.synchronize()``). ``case['dtype'] == 'bfloat16'`` runs
  the forward and loss under ``torch.autocast(dtype=torch.bfloat16)``.
  ``torch_compile``: ``torch.compile(model)``; the first call (compilation) is timed
  and reported as ``info['compile_s']``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  dev = torch.device(device)
  torch.manual_seed(seed)
  model = build_torch_model(case['model'], case['classes']).train().to(dev)
  h, w, c = case['image']
  rng = np.random.default_rng(seed)
  x = torch.from_numpy(rng.standard_normal((case['batch'], c, h, w), np.float32)).to(dev)
  y = torch.from_numpy(rng.integers(0, case['classes'], case['batch']).astype(np.int64)).to(dev)
  if channels_last:
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  criterion = torch.nn.CrossEntropyLoss()
  amp = case.get('dtype') == 'bfloat16'
  forward = torch.compile(model) if torch_compile else model
  cuda = dev.type == 'cuda'

  def one_step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
      loss = criterion(forward(x), y)
    loss.backward()
    opt.step()
    return loss

  def step():
    if torch.get_num_threads() != threads:
      torch.set_num_threads(threads)
    for _ in range(steps):
      loss = one_step()
    if cuda:
      torch.cuda.synchronize()
    return loss

  info = {'params': sum(p.numel() for p in model.parameters()), 'threads': threads,
          'device': str(dev), 'channels_last': channels_last, 'autocast_bf16': amp}
  if torch_compile:
    t0 = time.perf_counter()
    one_step()
    if cuda:
      torch.cuda.synchronize()
    info['compile_s'] = time.perf_counter() - t0
  return step, info


# ----------------------------------------------------------------------------
# JAX side.


def jax_batch(case: dict[str, Any], mesh, seed: int = 0):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ltjax.train import sharding  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  local = {'image': rng.standard_normal((case['batch'], *case['image']), np.float32),
           'label': rng.integers(0, case['classes'], case['batch']).astype(np.int32)}
  return sharding.to_global(local, mesh)


def build_jax_model(case: dict[str, Any]):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import ltjax.models  # pylint: disable=g-import-not-at-top
  return ltjax.models.build_model(
      ml_collections.ConfigDict({'name': case['model'], 'head': 'linear'}),
      num_classes=case['classes'],
      dtype={'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[case.get('dtype', 'float32')])


def loss_fn():
  import ltjax.losses  # pylint: disable=g-import-not-at-top
  return functools.partial(ltjax.losses.softmax_cross_entropy, reduction='mean')


def step_kwargs() -> dict[str, Any]:
  """The loss binding ``make_train_step``/``train_step`` expect in this checkout.

  Older ltjax took ``loss_fn=``; newer takes ``objective=`` (built here with
  ``ltjax.losses.simple_objective`` around the same mean cross-entropy).
  """
  import inspect  # pylint: disable=g-import-not-at-top
  import ltjax.losses  # pylint: disable=g-import-not-at-top
  import ltjax.train  # pylint: disable=g-import-not-at-top
  params = inspect.signature(ltjax.train.make_train_step).parameters
  if 'objective' in params:
    return {'objective': ltjax.losses.simple_objective(loss_fn())}
  return {'loss_fn': loss_fn()}


def make_state(model, case, mesh, seed: int = 0):
  import ltjax.optim  # pylint: disable=g-import-not-at-top
  import ltjax.train  # pylint: disable=g-import-not-at-top
  tx = ltjax.optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
  return ltjax.train.create_train_state(model, tx, input_shape=case['image'], seed=seed,
                                        mesh=mesh)


class JaxRunner:
  """A compiled step and the state it threads through (the state is donated).

  One call runs ``steps`` steps back to back (dispatch is asynchronous) and
  returns after ``jax.block_until_ready`` on the last one's outputs.
  """

  def __init__(self, compiled, state, batch, *, donated: bool, info: dict[str, Any],
               steps: int = 1):
    self.compiled, self.state, self.batch, self.donated, self.info = (
        compiled, state, batch, donated, info)
    self.steps = steps

  def __call__(self):
    import jax  # pylint: disable=g-import-not-at-top
    for _ in range(self.steps):
      out = self.compiled(self.state, self.batch)
      if isinstance(out, tuple) and len(out) == 2 and hasattr(out[0], 'params'):
        self.state = out[0]  # a train step: keep the new (donated-into) state
    jax.block_until_ready(out)
    return out


def compile_timed(jitted, *args, compiler_options=None) -> tuple[Any, dict[str, float]]:
  """``jitted.lower(*args).compile()`` with the two phases timed (seconds)."""
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  t1 = time.perf_counter()
  compiled = lowered.compile(compiler_options=compiler_options or {})
  t2 = time.perf_counter()
  return compiled, {'trace_lower_s': t1 - t0, 'compile_s': t2 - t1}


def make_jax_step(case, mesh, *, model=None, compiler_options=None, donate: bool = True,
                  kind: str = 'train_step', seed: int = 0):
  """A JaxRunner for the ltjax train step of ``case`` (or a piece of it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import ltjax.train  # pylint: disable=g-import-not-at-top
  from ltjax.train import sharding  # pylint: disable=g-import-not-at-top

  model = model if model is not None else build_jax_model(case)
  state = make_state(model, case, mesh, seed)
  batch = jax_batch(case, mesh, seed)
  lf = loss_fn()
  if kind == 'train_step' and donate:
    jitted = ltjax.train.make_train_step(state, mesh, **step_kwargs())  # the real thing
  elif kind == 'train_step':
    state_sharding = sharding.replicated_like(state, mesh)
    jitted = jax.jit(functools.partial(ltjax.train.train_step, **step_kwargs()),
                     in_shardings=(state_sharding, sharding.batch_sharded(mesh)),
                     out_shardings=(state_sharding, sharding.replicated(mesh)))
  else:
    def fwd_loss(params, state, batch):
      variables = {'params': params, 'batch_stats': state.batch_stats}
      (logits, _), new_vars = state.apply_fn(variables, batch['image'], train=True,
                                             mutable=['batch_stats'])
      return lf(logits, batch['label']), new_vars['batch_stats']

    if kind == 'forward':  # train-mode forward + loss + BN statistics update
      fn = lambda state, batch: fwd_loss(state.params, state, batch)
    elif kind == 'forward_backward':  # + gradients, no optimiser update
      fn = lambda state, batch: jax.value_and_grad(fwd_loss, has_aux=True)(
          state.params, state, batch)
    elif kind == 'sgd_update':  # the optax update alone, on gradients = params
      def fn(state, batch):
        del batch
        updates, opt_state = state.tx.update(state.params, state.opt_state, state.params)
        import optax  # pylint: disable=g-import-not-at-top
        return optax.apply_updates(state.params, updates), opt_state
    else:
      raise ValueError(kind)
    jitted = jax.jit(fn)
  compiled, times = compile_timed(jitted, state, batch, compiler_options=compiler_options)
  params = sum(x.size for x in jax.tree.leaves(state.params))
  info = dict(times, params=params)
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    info['gflop'] = float(cost.get('flops', 0.0)) / 1e9
  except Exception:  # pylint: disable=broad-except
    pass
  del jnp
  return JaxRunner(compiled, state, batch, donated=(kind == 'train_step' and donate), info=info)


# ----------------------------------------------------------------------------
# Model variants for --investigate (same parameters and math, other formulations).


def flax_variant_modules():
  """NCHW ResNet-32 backbone and a hand-written BatchNorm, as flax modules."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ltjax.models import resnet_cifar  # pylint: disable=g-import-not-at-top

  class HandBatchNorm(nn.Module):
    """BatchNorm with flax's parameters/statistics, written out by hand.

    Batch mean and E[x^2] in one pass (float32), then the affine folded into a
    single multiply-add y = x * a + b with a = scale * rsqrt(var + eps) and
    b = bias - mean * a. ``custom_vjp`` uses the closed-form BN backward
    dx = a * (g - mean(g) - xhat * mean(g * xhat)) instead of autodiff's graph.
    """
    use_running_average: bool = False
    axis: int = -1
    momentum: float = 0.9
    epsilon: float = 1e-5
    custom_grad: bool = False

    @nn.compact
    def __call__(self, x):
      train = not self.use_running_average
      c = x.shape[self.axis]
      shape = [1] * x.ndim
      shape[self.axis] = c
      axes = tuple(i for i in range(x.ndim) if i != self.axis % x.ndim)
      scale = self.param('scale', nn.initializers.ones, (c,))
      bias = self.param('bias', nn.initializers.zeros, (c,))
      ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), jnp.float32))
      ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), jnp.float32))
      if not train:
        a = scale * jax.lax.rsqrt(ra_var.value + self.epsilon)
        return x * a.reshape(shape) + (bias - ra_mean.value * a).reshape(shape)
      mean = jnp.mean(x, axes)
      var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axes) - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
      eps = self.epsilon
      if not self.custom_grad:
        a = scale * jax.lax.rsqrt(var + eps)
        return x * a.reshape(shape) + (bias - mean * a).reshape(shape)

      @jax.custom_vjp
      def bn(x, mean, var, scale, bias):
        a = scale * jax.lax.rsqrt(var + eps)
        return x * a.reshape(shape) + (bias - mean * a).reshape(shape)

      def bn_fwd(x, mean, var, scale, bias):
        rstd = jax.lax.rsqrt(var + eps)
        a = scale * rstd
        return x * a.reshape(shape) + (bias - mean * a).reshape(shape), (x, mean, rstd, scale)

      def bn_bwd(res, g):
        x, mean, rstd, scale = res
        xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
        g_mean, gx_mean = jnp.mean(g, axes), jnp.mean(g * xhat, axes)
        dx = (scale * rstd).reshape(shape) * (
            g - g_mean.reshape(shape) - xhat * gx_mean.reshape(shape))
        n = x.size // c
        # mean and var are functions of x; dx above already includes their paths.
        return dx, jnp.zeros_like(mean), jnp.zeros_like(mean), gx_mean * n, g_mean * n

      bn.defvjp(bn_fwd, bn_bwd)
      return bn(x, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var), scale, bias)

  class NCHWCifarResNet(nn.Module):
    """resnet_cifar.CifarResNet computed in NCHW (same parameter tree and init)."""
    stage_sizes: tuple[int, ...] = (5, 5, 5)
    widths: tuple[int, ...] = (16, 32, 64)

    @nn.compact
    def __call__(self, x, *, train: bool):
      def conv(x, features, stride, name):
        kernel = self.param(f'{name}_kernel', resnet_cifar._CONV_INIT,  # pylint: disable=protected-access
                            (3, 3, x.shape[1], features))
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((1, 1), (1, 1)),
                                            dimension_numbers=('NCHW', 'HWIO', 'NCHW'))

      def norm(name):
        return nn.BatchNorm(use_running_average=not train, axis=1, momentum=0.9,
                            epsilon=1e-5, name=name)

      x = jnp.transpose(x, (0, 3, 1, 2))
      x = nn.relu(norm('stem_bn')(conv(x, self.widths[0], 1, 'stem_conv')))
      for s, (n, w) in enumerate(zip(self.stage_sizes, self.widths)):
        for b in range(n):
          stride = 2 if s > 0 and b == 0 else 1
          p = f'stage{s + 1}_block{b}_'
          y = nn.relu(norm(p + 'bn1')(conv(x, w, stride, p + 'conv1')))
          y = norm(p + 'bn2')(conv(y, w, 1, p + 'conv2'))
          sc = x[:, :, ::stride, ::stride] if stride != 1 else x
          extra = w - sc.shape[1]
          if extra:
            sc = jnp.pad(sc, ((0, 0), (extra // 2, extra - extra // 2), (0, 0), (0, 0)))
          x = nn.relu(y + sc)
      return jnp.mean(x, axis=(2, 3))

  return HandBatchNorm, NCHWCifarResNet


def make_jax_step_small_cnn_flax_pool(case, mesh):
  """SmallCNN with flax's ``nn.max_pool`` (reduce-window), as before ``max_pool_2x2``.

  ``max_pool_2x2`` has the same values and gradients; this variant measures
  what XLA:CPU's reduce-window / select-and-scatter gradient costs.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from ltjax.models import small_cnn  # pylint: disable=g-import-not-at-top
  if not hasattr(small_cnn, 'max_pool_2x2'):
    raise RuntimeError('this SmallCNN already uses nn.max_pool (it is the baseline)')
  original = small_cnn.max_pool_2x2
  small_cnn.max_pool_2x2 = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  try:
    return make_jax_step(case, mesh, model=build_jax_model(case))
  finally:
    small_cnn.max_pool_2x2 = original


@contextlib.contextmanager
def patched_norm(factory: Callable[[bool, str], Any]):
  """Temporarily replaces resnet_cifar's BatchNorm factory ``_norm(train, dtype, name)``.

  Flax modules are traced when they are called, so the patch has to stay in
  place through ``create_train_state`` and ``.lower()``, not only ``build_model``.
  """
  from ltjax.models import resnet_cifar  # pylint: disable=g-import-not-at-top
  original = resnet_cifar._norm  # pylint: disable=protected-access
  resnet_cifar._norm = lambda train, dtype, name: factory(train, name)  # pylint: disable=protected-access
  try:
    yield
  finally:
    resnet_cifar._norm = original  # pylint: disable=protected-access


def make_jax_step_patched_bn(case, mesh, *, custom_grad: bool):
  HandBatchNorm, _ = flax_variant_modules()  # pylint: disable=invalid-name
  factory = lambda train, name: HandBatchNorm(use_running_average=not train,
                                              custom_grad=custom_grad, name=name)
  with patched_norm(factory):
    return make_jax_step(case, mesh, model=build_jax_model(case))


def make_jax_step_nchw(case, mesh):
  import ltjax.models  # pylint: disable=g-import-not-at-top
  from ltjax.models import heads  # pylint: disable=g-import-not-at-top
  _, NCHWCifarResNet = flax_variant_modules()  # pylint: disable=invalid-name
  model = ltjax.models.Classifier(backbone=NCHWCifarResNet(),
                                  head=heads.LinearHead(num_classes=case['classes']))
  return make_jax_step(case, mesh, model=model)


# ----------------------------------------------------------------------------
# Where the time goes: a jax.profiler trace of the step, grouped by HLO op kind.


def classify_hlo(hlo_text: str) -> dict[str, str]:
  """Maps the optimised module's instruction names to coarse categories."""
  bodies, current = {}, None
  for line in hlo_text.splitlines():
    m = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if m and not line.startswith(' '):
      current = m.group(1)
      bodies[current] = []
    elif current:
      bodies[current].append(line)
  categories = {}
  for line in hlo_text.splitlines():
    m = re.match(r'^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\(', line)
    if not m:
      continue
    name, shape, op = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', line)
    op_name = op_name.group(1) if op_name else ''
    called = re.search(r'calls=%([\w.\-]+)', line)
    body = '\n'.join(bodies.get(called.group(1), [])) if called else ''
    dims_text = re.search(r'\[([\d,]*)\]', shape)
    dims = [int(d) for d in dims_text.group(1).split(',') if d] if dims_text else []
    numel = 1
    for d in dims:
      numel *= d
    if ' convolution(' in body or op == 'convolution':
      if len(dims) == 4 and dims.count(3) >= 2 and numel < 100_000:
        category = 'conv weight-grad'
      elif 'transpose(' in op_name:
        category = 'conv input-grad'
      else:
        category = 'conv forward'
    elif ('transpose' in name or op in ('transpose', 'copy')) and len(dims) >= 4:
      category = ('layout transposes (activation-sized)' if numel >= 100_000
                  else 'layout transposes (weight-sized)')
    elif numel >= 100_000 and ('reduce-window(' in body or 'select-and-scatter(' in body or op in (
        'reduce-window', 'select-and-scatter') or 'iota' in name):
      category = 'max-pool forward/backward (reduce-window, iota, scatter)'
    elif ' dot(' in body or op == 'dot':
      category = 'matmul (head)'
    elif ' reduce(' in body or 'reduce' in name or op == 'reduce':
      category = 'reductions (BN statistics, loss, norms)'
    else:
      category = 'elementwise (BN apply, ReLU, residual, SGD update)'
    categories[name] = category
  return categories


def profile_breakdown(runner: JaxRunner, steps: int = 2) -> tuple[dict[str, float], float]:
  """(category -> ms per step, wall ms per step) from a jax.profiler trace.

  The wall time is the median of 3 untraced steps just before (the trace's
  start/stop would inflate it).
  """
  import jax  # pylint: disable=g-import-not-at-top
  categories = classify_hlo(runner.compiled.as_text())
  wall = _common.summarize(_common.time_interleaved({'s': runner}, repeats=3, warmup=0)['s'])[
      'median_ms']
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for _ in range(steps):
        runner()
    path = glob.glob(os.path.join(d, '**', '*.xplane.pb'), recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
  totals = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for event in line.events:
        if event.name in categories:
          totals[categories[event.name]] += event.duration_ns
  return {k: v / 1e6 / steps for k, v in totals.most_common()}, wall


# ----------------------------------------------------------------------------
# Convolution micro-benchmarks: XLA:CPU vs PyTorch per 3x3 conv of ResNet-32.


def conv_microbenchmarks(repeats: int, threads: int, use_torch: bool = True) -> list[dict[str, Any]]:
  """Forward, input-grad and weight-grad of each 3x3 conv shape of ResNet-32.

  JAX ops are jitted alone (NHWC, the weight-grad includes the layout
  transposes XLA inserts), with the default XLA:CPU backend (YNNPACK
  convolutions) and with YNNPACK fusions off (XLA's Eigen convolutions);
  PyTorch uses aten.convolution / convolution_backward (oneDNN) in NCHW.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rows = []
  have_torch = use_torch and torch_available()
  if have_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
  dn = ('NHWC', 'HWIO', 'NHWC')
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                                   dimension_numbers=dn)
  jax_ops = {
      'forward': lambda x, w, g: conv(x, w),
      'input-grad': lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0],
      'weight-grad': lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0],
  }
  backends = {'jax': {}, 'jax ynn-off': {'xla_cpu_experimental_ynn_fusion_type': ''}}
  rng = np.random.default_rng(0)
  for h, c in ((32, 16), (16, 32), (8, 64)):
    x_np = rng.standard_normal((128, h, h, c), np.float32)
    w_np = rng.standard_normal((3, 3, c, c), np.float32) * 0.1
    g_np = rng.standard_normal((128, h, h, c), np.float32)
    args = tuple(jax.numpy.asarray(a) for a in (x_np, w_np, g_np))
    fns = {}
    for k, op in jax_ops.items():
      for b, opts in backends.items():
        compiled = jax.jit(op).lower(*args).compile(compiler_options=opts)
        fns[f'{b} {k}'] = functools.partial(
            lambda f: f(*args).block_until_ready(), compiled)
    if have_torch:
      tx = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy())
      tw = torch.from_numpy(w_np.transpose(3, 2, 0, 1).copy())
      tg = torch.from_numpy(g_np.transpose(0, 3, 1, 2).copy())
      bwd = torch.ops.aten.convolution_backward
      fns['torch forward'] = lambda: torch.nn.functional.conv2d(tx, tw, padding=1)
      fns['torch input-grad'] = lambda: bwd(tg, tx, tw, None, [1, 1], [1, 1], [1, 1], False,
                                            [0, 0], 1, [True, False, False])
      fns['torch weight-grad'] = lambda: bwd(tg, tx, tw, None, [1, 1], [1, 1], [1, 1], False,
                                             [0, 0], 1, [False, True, False])
    times = _common.time_interleaved(fns, repeats=repeats, warmup=1)
    gflop = 2 * 128 * h * h * c * c * 9 / 1e9
    for k in jax_ops:
      t = _common.summarize(times[f'torch {k}'])['median_ms'] if have_torch else None
      for b in backends:
        j = _common.summarize(times[f'{b} {k}'])['median_ms']
        rows.append(_common.record(
            f'conv3x3 {h}x{h}x{c} b128 {k}/{b}', 'op_time', j, 'ms',
            ratio=(j / t if t else None), reference='torch (oneDNN)' if t else None,
            torch_ms=t, gflop=gflop, gflop_per_s=gflop / (j / 1e3)))
  return rows


# ----------------------------------------------------------------------------
# Driver.


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--cases', default='resnet32,small_cnn',
                 help=f'comma-separated subset of {sorted(CASES)}')
  p.add_argument('--quick', action='store_true',
                 help='few repetitions, no load wait, results not written unless --out')
  p.add_argument('--investigate', action='store_true',
                 help='also run the experiments behind the README section (resnet32)')
  p.add_argument('--no-torch', action='store_true', help='skip the PyTorch comparison')
  p.add_argument('--repeats', type=int, default=None,
                 help='timed steps per measurement (default 12; --quick 3)')
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  p.add_argument('--torch-threads', type=int, default=None,
                 help='torch.set_num_threads (default: the core count)')
  p.add_argument('--torch-device', default='auto',
                 help="PyTorch device: 'cpu', 'cuda' or 'auto' (cuda when available)")
  p.add_argument('--torch-channels-last', action='store_true',
                 help='also time PyTorch eager in channels_last')
  p.add_argument('--torch-compile', action='store_true',
                 help='also time PyTorch with torch.compile(model) (compile time reported)')
  p.add_argument('--steps-per-sample', type=int, default=None,
                 help='steps run back to back per timed sample, blocking after the last '
                      '(default: 1 on CPU, 10 on a GPU); times are per step')
  p.add_argument('--compile-cache', default=None, metavar='DIR',
                 help='use JAX\'s persistent compilation cache in DIR and also report a '
                      'warm-cache compile')
  p.add_argument('--max-load', type=float, default=0.5,
                 help='wait until the 1-min load average is below this (0: do not wait)')
  p.add_argument('--max-wait', type=float, default=600, help='seconds to wait at most')
  p.add_argument('--group-wait', type=float, default=300,
                 help='before each timed group, wait up to this long while other processes '
                      'use >= 0.25 cores (0: do not wait; --quick: 0)')
  p.add_argument('--out', default=None,
                 help='results JSON path (default benchmarks/results/step_time.json; '
                      '"" to skip; --quick skips unless given)')
  args = p.parse_args(argv)
  args.cases = [c for c in args.cases.split(',') if c]
  for c in args.cases:
    if c not in CASES:
      p.error(f'unknown case {c!r}; valid: {sorted(CASES)}')
  if args.repeats is None:
    args.repeats = 3 if args.quick else 12
  if args.quick:
    args.warmup = min(args.warmup, 1)
    args.group_wait = 0
  if args.out is None:
    args.out = '' if args.quick else os.path.join(_common.RESULTS_DIR, 'step_time.json')
  return args


def timed_group(fns, args, *, repeats: int, warmup: int, what: str):
  """wait_for_idle, then time_interleaved under OtherCpu: (times, other_cpu_cores).

  If other processes kept >= NOISY_CORES busy meanwhile, waits again and
  re-times once (unless --group-wait 0); the rows then carry the second try.
  """
  for attempt in range(2):
    if args.group_wait > 0:
      _common.wait_for_idle(max_wait_s=args.group_wait)
    with _common.OtherCpu() as other:
      times = _common.time_interleaved(fns, repeats=repeats, warmup=warmup if not attempt else 0)
    if other.cores is None or other.cores < NOISY_CORES:
      break
    log(f'WARNING: other processes used {other.cores:.2f} cores while timing {what}; '
        f'busy: {_common.busy_processes()[:3]}' + ('; re-timing' if not attempt and
                                                   args.group_wait > 0 else ''))
    if args.group_wait <= 0:
      break
  return times, other.cores


def noise_fields(other_cores):
  return {'other_cpu_cores': other_cores,
          'noisy': (True if other_cores is not None and other_cores >= NOISY_CORES else None)}


def train_step_compiler_options(mesh):
  """The XLA options ``ltjax.train.make_train_step`` adds on this platform (None: none)."""
  try:
    from ltjax.train import steps  # pylint: disable=g-import-not-at-top
    return steps.compiler_options(mesh) if hasattr(steps, 'compiler_options') else None
  except Exception as e:  # pylint: disable=broad-except
    return f'unknown: {type(e).__name__}'


def setup_compile_cache(directory: str) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return len(os.listdir(directory))


def torch_reference_label(threads: int, device: str) -> str:
  return 'torch eager, cuda' if device == 'cuda' else f'torch eager, {_threads(threads)}'


def measure_case(name: str, args, mesh, torch_threads: int | None) -> tuple[list, dict]:
  """Compile + interleaved steady-state timing of one case; returns (rows, runners)."""
  import jax  # pylint: disable=g-import-not-at-top
  case = CASES[name]
  steps = args.steps_per_sample
  rows = []
  cache_before = set(os.listdir(args.compile_cache)) if args.compile_cache else set()
  log(f'[{name}] building and compiling the ltjax train step')
  runner = make_jax_step(case, mesh)
  compile_note = 'cold (no persistent cache)'
  if args.compile_cache:
    new_entries = [f for f in set(os.listdir(args.compile_cache)) - cache_before
                   if 'train_step' in f]
    compile_note = ('cold (persistent-cache miss, entry written)' if new_entries
                    else 'persistent-cache hit from an earlier run')
  rows.append(_common.record(f'{name}/jax', 'compile_time', runner.info['compile_s'], 's',
                             trace_lower_s=runner.info['trace_lower_s'], cache=compile_note))
  if args.compile_cache:
    jax.clear_caches()
    warm = make_jax_step(case, mesh)
    rows.append(_common.record(f'{name}/jax', 'compile_time_warm_cache', warm.info['compile_s'],
                               's', trace_lower_s=warm.info['trace_lower_s'],
                               cache='persistent cache populated, in-memory caches cleared'))
    del warm
  runner.steps = steps
  fns = {'jax': runner}
  tinfos: dict[str, dict[str, Any]] = {}
  torch_errors: dict[str, str] = {}
  if torch_threads:
    variants = {'torch': {}}
    if args.torch_channels_last:
      variants['torch_channels_last'] = {'channels_last': True}
    if args.torch_compile:
      variants['torch_compile'] = {'torch_compile': True}
    for label, kw in variants.items():
      try:
        if kw.get('torch_compile'):
          log(f'[{name}] torch.compile (inductor) of the PyTorch model')
        tstep, tinfo = make_torch_step(case, threads=torch_threads, device=args.torch_device,
                                       steps=steps, **kw)
      except Exception as e:  # pylint: disable=broad-except
        torch_errors[label] = f'{type(e).__name__}: {str(e)[:300]}'
        log(f'[{name}] {label} unavailable: {torch_errors[label]}')
        continue
      fns[label], tinfos[label] = tstep, tinfo
      if tinfo['params'] != runner.info['params']:
        log(f'WARNING: parameter counts differ: jax {runner.info["params"]} '
            f'{label} {tinfo["params"]}')
  log(f'[{name}] timing {args.repeats} interleaved samples of {steps} step(s) after '
      f'{args.warmup} warm-up')
  times, other = timed_group(fns, args, repeats=args.repeats, warmup=args.warmup, what=name)
  times = {k: [t / steps for t in v] for k, v in times.items()}  # per step
  stats = {k: _common.summarize(v) for k, v in times.items()}
  js = stats['jax']
  ts = stats.get('torch')
  gflop = runner.info.get('gflop')
  reference = torch_reference_label(torch_threads, args.torch_device) if torch_threads else None
  extra_ratios = {f'ratio_vs_{k}': js['median_ms'] / v['median_ms'] for k, v in stats.items()
                  if k not in ('jax', 'torch')}
  rows.append(_common.record(
      f'{name}/jax', 'step_time', js['median_ms'], 'ms',
      ratio=(js['median_ms'] / ts['median_ms'] if ts else None),
      reference=(reference if ts else None), **extra_ratios,
      min_ms=js['min_ms'], p25_ms=js['p25_ms'], p75_ms=js['p75_ms'], n=js['n'],
      steps_per_sample=steps, batch=case['batch'], dtype=case.get('dtype', 'float32'),
      images_per_s=case['batch'] / js['median_ms'] * 1e3,
      params=runner.info['params'], xla_gflop_per_step=gflop, **noise_fields(other),
      note=None if ts else 'torch not importable or --no-torch: no comparison',
      torch_errors=torch_errors or None))
  for label, tinfo in tinfos.items():
    st = stats[label]
    if 'compile_s' in tinfo:
      rows.append(_common.record(f'{name}/{label}', 'compile_time', tinfo['compile_s'], 's',
                                 note='torch.compile + first step (inductor, cold)'))
    rows.append(_common.record(
        f'{name}/{label}', 'step_time', st['median_ms'], 'ms', threads=torch_threads,
        device=tinfo['device'], channels_last=tinfo['channels_last'],
        autocast_bf16=tinfo['autocast_bf16'], compiled='compile_s' in tinfo,
        min_ms=st['min_ms'], p25_ms=st['p25_ms'], p75_ms=st['p75_ms'], n=st['n'],
        steps_per_sample=steps, batch=case['batch'],
        images_per_s=case['batch'] / st['median_ms'] * 1e3,
        params=tinfo['params'], **noise_fields(other)))
  return rows, fns


def run_in_subprocess(label: str, cases: list[str], args, *, env: dict[str, str] | None = None,
                      prefix: list[str] | None = None, extra: list[str] | None = None):
  """Runs this script's main measurement in a fresh process; returns its rows, relabelled.

  For settings that are process-wide (XLA_FLAGS, the CPU affinity). The rows
  are not interleaved with the parent's, so compare them with each other (the
  subprocess measures JAX and PyTorch side by side) rather than with the
  parent's numbers.
  """
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  cmd = (prefix or []) + [
      sys.executable, os.path.abspath(__file__), '--cases', ','.join(cases), '--max-load', '0',
      '--out', '', '--repeats', str(max(3, args.repeats // 3)), '--warmup', '1',
      '--group-wait', '0'] + (extra or [])
  if args.no_torch:
    cmd.append('--no-torch')
  full_env = dict(os.environ, **(env or {}))
  if args.group_wait > 0:
    _common.wait_for_idle(max_wait_s=args.group_wait)
  log(f'[investigate] subprocess: {label}: {" ".join(cmd[len(prefix or []):][2:])}')
  try:
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600,
                          check=False)
  except (OSError, subprocess.SubprocessError) as e:
    log(f'[investigate] {label} failed: {e}')
    return []
  rows = []
  for line in proc.stdout.splitlines():
    if line.startswith('{'):
      row = json.loads(line)
      case, _, side = row['name'].partition('/')
      row['name'] = f'{case}/{label}/{side}'
      row['setting'] = {'env': env or {}, 'prefix': prefix or [], 'extra_args': extra or []}
      rows.append(row)
  if proc.returncode != 0 or not rows:
    log(f'[investigate] {label}: exit {proc.returncode}; stderr tail: {proc.stderr[-800:]}')
  return rows


def investigate(args, mesh, threads: int, base_runner: JaxRunner | None):
  """The experiments of the README's 'Why JAX is slower' section (mostly resnet32).

  Variants are timed in small groups; every group contains the baseline and
  PyTorch, so its ratios are self-contained, and it is re-timed once if other
  processes were busy meanwhile.
  """
  import shutil  # pylint: disable=g-import-not-at-top
  name, case = 'resnet32', CASES['resnet32']
  reps = max(3, args.repeats // 4)
  rows = []
  notes: dict[str, str] = {}
  base = base_runner or make_jax_step(case, mesh)
  base_label = 'baseline (ltjax train step)'
  use_torch = torch_available() and not args.no_torch
  torch_label = f'torch eager, {_threads(threads)}' if use_torch else None
  torch_step = make_torch_step(case, threads=threads)[0] if use_torch else None
  kept: dict[str, Any] = {}

  def build(label, fn, note=None):
    log(f'[investigate] compiling: {label}')
    try:
      runner = fn()
      if note:
        notes[label] = note
      return runner
    except Exception as e:  # pylint: disable=broad-except
      log(f'[investigate] {label} failed: {type(e).__name__}: {str(e)[:300]}')
      rows.append(_common.emit(_common.record(
          f'{name}/investigate/{label}', 'step_time', float('nan'), 'ms',
          error=f'{type(e).__name__}: {str(e)[:300]}')))
      return None

  def group(title, builders, extra_torch=None):
    variants = {base_label: base}
    for label, fn, *note in builders:
      runner = build(label, fn, *note)
      if runner is not None:
        variants[label] = runner
    if torch_label:
      variants[torch_label] = torch_step
    variants.update(extra_torch or {})
    log(f'[investigate] {title}: timing {len(variants)} variants, {reps} interleaved rounds')
    times, other = timed_group(variants, args, repeats=reps, warmup=1, what=title)
    base_ms = _common.summarize(times[base_label])['median_ms']
    torch_ms = _common.summarize(times[torch_label])['median_ms'] if torch_label else None
    for label, ts in times.items():
      s = _common.summarize(ts)
      extra = {}
      if isinstance(variants[label], JaxRunner):
        extra['compile_s'] = variants[label].info['compile_s']
      rows.append(_common.emit(_common.record(
          f'{name}/investigate/{title}/{label}', 'step_time', s['median_ms'], 'ms',
          vs_baseline=s['median_ms'] / base_ms,
          ratio=(s['median_ms'] / torch_ms if torch_ms else None),
          reference=torch_label if torch_ms else None,
          min_ms=s['min_ms'], p25_ms=s['p25_ms'], p75_ms=s['p75_ms'], n=s['n'],
          note=notes.get(label), **extra, **noise_fields(other))))
    return variants

  group('pieces', [
      ('no donation', lambda: make_jax_step(case, mesh, donate=False)),
      ('forward only (train mode + loss)', lambda: make_jax_step(case, mesh, kind='forward')),
      ('forward + backward (no optimiser update)',
       lambda: make_jax_step(case, mesh, kind='forward_backward')),
      ('optimiser update alone (optax torch_sgd)',
       lambda: make_jax_step(case, mesh, kind='sgd_update')),
  ])
  group('formulations', [
      ('NCHW layout (same parameter shapes)', lambda: make_jax_step_nchw(case, mesh)),
      ('BN hand-written (fused stats, folded affine)',
       lambda: make_jax_step_patched_bn(case, mesh, custom_grad=False)),
      ('BN hand-written + closed-form custom_vjp backward',
       lambda: make_jax_step_patched_bn(case, mesh, custom_grad=True)),
  ])
  eigen_label = 'xla: YNNPACK for reductions only (Eigen convs)'
  xla = group('xla options', [
      (label, functools.partial(make_jax_step, case, mesh, compiler_options=opts),
       f'compiler_options={opts}') for label, opts in XLA_VARIANTS.items()])
  kept[eigen_label] = xla.get(eigen_label)
  del xla
  if use_torch:
    extra_torch = {f'torch eager channels_last, {_threads(threads)}': make_torch_step(
        case, threads=threads, channels_last=True)[0]}
    if threads != 1:
      extra_torch['torch eager, 1 thread'] = make_torch_step(case, threads=1)[0]
    group('torch threads and layout', [], extra_torch=extra_torch)

  # Where does the time go? Profiles of the baseline and of the Eigen-conv
  # variant. XLA's Eigen convolution thunks run asynchronously on the intra-op
  # pool and are not attributed to their HLO name, so their time appears as
  # 'unattributed' (wall minus attributed); YNNPACK fusions are attributed.
  prof_rows = []
  profiles = {'profile': base}
  if isinstance(kept.get(eigen_label), JaxRunner):
    profiles['profile with Eigen convs'] = kept[eigen_label]
  for prefix, runner in profiles.items():
    log(f'[investigate] {prefix}')
    try:
      breakdown, wall = profile_breakdown(runner)
      breakdown['unattributed (async Eigen convs, dispatch)'] = max(
          0.0, wall - sum(breakdown.values()))
      for cat, ms in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        prof_rows.append(_common.record(f'{name}/{prefix}/{cat}', 'time_per_step', ms, 'ms',
                                        share=ms / wall, profiled_wall_ms=wall))
    except Exception as e:  # pylint: disable=broad-except
      log(f'[investigate] profile failed: {e}')
  kept.clear()

  log('[investigate] per-convolution micro-benchmarks')
  if args.group_wait > 0:
    _common.wait_for_idle(max_wait_s=args.group_wait)
  with _common.OtherCpu() as conv_other:
    conv_rows = conv_microbenchmarks(repeats=max(5, args.repeats // 2), threads=threads,
                                     use_torch=not args.no_torch)
  prof_rows += [dict(r, **{k: v for k, v in noise_fields(conv_other.cores).items() if v is not None})
                for r in conv_rows]

  # The small CNN: its own bottlenecks (max-pool backward) next to the XLA option.
  if 'small_cnn' in args.cases:
    scase = CASES['small_cnn']
    log('[investigate] small_cnn variants')
    svariants = {'small_cnn baseline (ltjax train step)': make_jax_step(scase, mesh)}
    svariants['small_cnn xla: YNNPACK for reductions only (Eigen convs)'] = make_jax_step(
        scase, mesh, compiler_options=XLA_VARIANTS[eigen_label])
    try:
      svariants['small_cnn flax nn.max_pool (reduce-window gradient, the previous SmallCNN)'] = (
          make_jax_step_small_cnn_flax_pool(scase, mesh))
    except RuntimeError as e:
      log(f'[investigate] {e}')
    storch = None
    if torch_available() and not args.no_torch:
      storch = f'small_cnn torch eager, {_threads(threads)}'
      svariants[storch] = make_torch_step(scase, threads=threads)[0]
    stimes, sother = timed_group(svariants, args, repeats=max(5, args.repeats), warmup=1,
                                 what='small_cnn variants')
    sbase = _common.summarize(stimes['small_cnn baseline (ltjax train step)'])['median_ms']
    storch_ms = _common.summarize(stimes[storch])['median_ms'] if storch else None
    for label, ts in stimes.items():
      s_ = _common.summarize(ts)
      prof_rows.append(_common.record(
          f'small_cnn/investigate/{label[len("small_cnn "):]}', 'step_time', s_['median_ms'],
          'ms', vs_baseline=s_['median_ms'] / sbase,
          ratio=s_['median_ms'] / storch_ms if storch_ms else None,
          reference=storch[len('small_cnn '):] if storch else None,
          min_ms=s_['min_ms'], p25_ms=s_['p25_ms'], p75_ms=s_['p75_ms'], n=s_['n'],
          **noise_fields(sother)))
    try:
      breakdown, wall = profile_breakdown(svariants['small_cnn baseline (ltjax train step)'])
      breakdown['unattributed (async Eigen convs, dispatch)'] = max(
          0.0, wall - sum(breakdown.values()))
      for cat, ms in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        prof_rows.append(_common.record(f'small_cnn/profile/{cat}', 'time_per_step', ms, 'ms',
                                        share=ms / wall, profiled_wall_ms=wall))
    except Exception as e:  # pylint: disable=broad-except
      log(f'[investigate] small_cnn profile failed: {e}')
    del svariants

  # Process-wide settings, each in a fresh process (JAX and PyTorch side by side).
  prof_rows += run_in_subprocess(f'XLA_FLAGS={RECOMMENDED_XLA_FLAGS}', ['resnet32', 'small_cnn'],
                                 args, env={'XLA_FLAGS': RECOMMENDED_XLA_FLAGS})
  if shutil.which('taskset') and threads > 1:
    prof_rows += run_in_subprocess('1 core (taskset -c 0), torch 1 thread', ['resnet32'], args,
                                   prefix=['taskset', '-c', '0'], extra=['--torch-threads', '1'])
  for r in prof_rows:
    _common.emit(r)
  return rows + prof_rows


def main(argv=None) -> int:
  args = parse_args(argv)
  threads = args.torch_threads or _common.core_count()
  have_torch = torch_available() and not args.no_torch
  if args.no_torch:
    log('PyTorch comparison skipped (--no-torch).')
  elif not have_torch:
    log('PyTorch is not importable: running the JAX side only.')
  else:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(threads)
    if args.torch_device == 'auto':
      args.torch_device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.torch_device == 'cuda':
      torch.backends.cudnn.benchmark = True  # XLA autotunes its convolutions too.
      log(f'torch {torch.__version__} on {torch.cuda.get_device_name(0)} (cudnn.benchmark on, '
          f'cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, '
          f'matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32})')
    else:
      log(f'torch.set_num_threads({threads}) (= the {_common.core_count()} cores this process '
          f'may use), torch {torch.__version__}, mkldnn={torch.backends.mkldnn.is_available()}')

  quiet = None
  if args.max_load > 0 and not args.quick:
    quiet = _common.wait_for_quiet(args.max_load, args.max_wait)
    if not quiet['quiet']:
      log(f'WARNING: load average still {quiet["load_after"]:.2f}; busy: '
          f'{_common.busy_processes()}')
  if args.compile_cache:
    n = setup_compile_cache(args.compile_cache)
    log(f'persistent compilation cache: {args.compile_cache} ({n} entries before)')

  import jax  # pylint: disable=g-import-not-at-top
  from ltjax.train import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh()
  log(f'jax {jax.__version__} on {jax.devices()[0].device_kind} x{len(jax.devices())}')
  if args.steps_per_sample is None:
    args.steps_per_sample = 1 if jax.default_backend() == 'cpu' else 10

  t_start = time.perf_counter()
  rows, resnet_runner = [], None
  for name in args.cases:
    case_rows, fns = measure_case(name, args, mesh, threads if have_torch else None)
    for r in case_rows:
      _common.emit(r)
    rows += case_rows
    if name == 'resnet32':
      resnet_runner = fns['jax']
  if args.investigate and jax.default_backend() != 'cpu':
    log('--investigate is about XLA:CPU (its options fail elsewhere): skipped on '
        f'{jax.default_backend()}')
  elif args.investigate:
    rows += investigate(args, mesh, threads, resnet_runner)
  elapsed = time.perf_counter() - t_start
  log(f'done in {elapsed:.0f}s (after the load wait)')
  if args.out:
    path = _common.write_results(
        args.out, rows,
        settings={'repeats': args.repeats, 'warmup': args.warmup, 'torch_threads': threads
                  if have_torch else None, 'torch_device': args.torch_device if have_torch
                  else None, 'steps_per_sample': args.steps_per_sample,
                  'torch_channels_last': args.torch_channels_last,
                  'torch_compile': args.torch_compile, 'cases': args.cases,
                  'train_step_compiler_options': train_step_compiler_options(mesh),
                  'quick': args.quick,
                  'investigate': args.investigate, 'compile_cache': args.compile_cache,
                  'lr': LR, 'momentum': MOMENTUM, 'weight_decay': WEIGHT_DECAY},
        load={'wait': quiet, 'load_at_end': _common.load_average(),
              'busy_at_end': _common.busy_processes()},
        elapsed_s=round(elapsed, 1))
    log(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
