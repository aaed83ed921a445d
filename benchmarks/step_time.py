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

JAX side: ``ltjax.models.build_model`` + ``ltjax.train.create_train_state`` +
``ltjax.train.make_train_step`` (the real, donated step, with the XLA options
it sets on this platform) with ``ltjax.optim.torch_sgd(0.1, momentum=0.9,
weight_decay=5e-4)`` and the mean softmax cross-entropy
(``ltjax.losses.simple_objective``), on the mesh of
``ltjax.train.sharding.make_mesh()``. The compile time is that of
``step.lower(...).compile()`` (tracing and lowering reported separately); the
step time is the median over timed steps after warm-up, each ended by
``jax.block_until_ready`` on the new state and the metrics.

PyTorch side (when torch imports; ``--no-torch`` skips it): the same
architecture in eager mode, train mode, ``torch.optim.SGD(lr=0.1,
momentum=0.9, weight_decay=5e-4)`` and ``nn.CrossEntropyLoss``, same batch,
NCHW, with ``torch.set_num_threads(cores)``. ``--torch-channels-last`` adds
PyTorch eager in channels_last (NHWC, cuDNN's fast layout) and
``--torch-compile`` PyTorch with ``torch.compile(model)`` (inductor; compile
time reported), each as its own row, with the JAX step's ratio to them on the
JAX row. JAX and PyTorch steps are interleaved round-robin in the same
process, so load drifts affect both alike. ``ratio`` = JAX time / PyTorch
time.

On a GPU (JAX backend 'gpu', PyTorch on 'cuda' when it sees one):
``--steps-per-sample`` (default 10 there, 1 on CPU) steps run back to back per
timed sample, which ends with ``jax.block_until_ready`` /
``torch.cuda.synchronize()``, and the sample is divided by that count (the
training loop's throughput, host dispatch overlapping device work);
``torch.backends.cudnn.benchmark`` is on (XLA autotunes its convolutions
too); float32 convolutions may use TF32 on both sides (the frameworks'
defaults, recorded in the results' machine info); JAX may take at most
``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default here 0.45) of the GPU memory so
that PyTorch fits beside it.

The XLA:CPU investigation that used to live here (``--investigate``: compiler
options, BatchNorm formulations, NCHW, profiles, convolution
micro-benchmarks) was removed once its finding landed in
``ltjax.train.steps``' XLA:CPU options; benchmarks/README.md keeps its results
and says where to find the code in git history.

Usage:
  python benchmarks/step_time.py                 # resnet32 + small_cnn, ~1-2 min on 2 cores
  python benchmarks/step_time.py --quick         # < 1 min, not written to results/
  python benchmarks/step_time.py --cases resnet32 --no-torch

Every result is one JSON line on stdout (progress goes to stderr); the list is
also written to benchmarks/results/step_time.json with the machine and date.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# On a GPU, JAX preallocates 75 % of the memory by default, which would leave
# PyTorch (same process) too little for ResNet-50. Set before jax is imported
# (and so before its GPU client reads it); no effect on CPU.
os.environ.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.45')

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import _common
from _common import log
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax import train
from ltjax.train import sharding
from ltjax.train import steps as train_steps

try:  # Optional: without PyTorch only the JAX side runs.
  import torch
  import torch.nn.functional as F
  from torch import nn
except ImportError:
  torch = F = nn = None
try:  # Optional: the PyTorch twin of ResNet-50.
  import torchvision
except ImportError:
  torchvision = None
# pylint: enable=g-import-not-at-top,wrong-import-position

CASES = {
    'resnet32': dict(model='resnet32', batch=128, image=(32, 32, 3), classes=100),
    'resnet32_b512': dict(model='resnet32', batch=512, image=(32, 32, 3), classes=100),
    'small_cnn': dict(model='small_cnn', batch=64, image=(28, 28, 1), classes=10),
    'resnet50': dict(model='resnet50', batch=128, image=(224, 224, 3), classes=1000),
    'resnet50_bf16': dict(
        model='resnet50', batch=128, image=(224, 224, 3), classes=1000, dtype='bfloat16'
    ),
}
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4
# Rows timed while other processes kept this many cores busy get 'noisy': true.
NOISY_CORES = 0.3


# ----------------------------------------------------------------------------
# PyTorch reference models.


def _threads(n: int) -> str:
  return f'{n} thread' + ('s' if n != 1 else '')


def build_torch_model(name: str, num_classes: int):
  """The PyTorch twin of the ltjax backbone ``name`` plus a linear head."""

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
      s = x[:, :, :: self.stride, :: self.stride] if self.stride != 1 else x
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
    if torchvision is None:
      raise ImportError('torchvision is not installed (the PyTorch twin of resnet50)')
    return torchvision.models.resnet50(num_classes=num_classes)
  model = {'resnet32': CifarResNet, 'small_cnn': SmallCNN}[name]()
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight)
  return model


def make_torch_step(
    case: dict[str, Any],
    *,
    threads: int,
    channels_last: bool = False,
    seed: int = 0,
    device: str = 'cpu',
    steps: int = 1,
    torch_compile: bool = False,
):
  """(blocking step callable, info) for the PyTorch twin of ``case``.

  One call runs ``steps`` optimiser steps and returns when they are done (on
  CUDA: ``torch.cuda.synchronize()``). ``case['dtype'] == 'bfloat16'`` runs
  the forward and loss under ``torch.autocast(dtype=torch.bfloat16)``.
  ``torch_compile``: ``torch.compile(model)``; the first call (compilation) is timed
  and reported as ``info['compile_s']``.
  """

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

  info = {
      'params': sum(p.numel() for p in model.parameters()),
      'threads': threads,
      'device': str(dev),
      'channels_last': channels_last,
      'autocast_bf16': amp,
  }
  if torch_compile:
    t0 = time.perf_counter()
    one_step()
    if cuda:
      torch.cuda.synchronize()
    info['compile_s'] = time.perf_counter() - t0
  return step, info


# ----------------------------------------------------------------------------
# ----------------------------------------------------------------------------
# JAX side.


def jax_batch(case: dict[str, Any], mesh, seed: int = 0) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  local = {
      'image': rng.standard_normal((case['batch'], *case['image']), np.float32),
      'label': rng.integers(0, case['classes'], case['batch']).astype(np.int32),
  }
  return sharding.to_global(local, mesh)


def build_jax_model(case: dict[str, Any]):
  return models.build_model(
      ml_collections.ConfigDict({'name': case['model'], 'head': 'linear'}),
      num_classes=case['classes'],
      dtype={'float32': jnp.float32, 'bfloat16': jnp.bfloat16}[case.get('dtype', 'float32')],
  )


class JaxRunner:
  """A compiled train step and the state it threads through (the state is donated).

  One call runs ``steps`` steps back to back (dispatch is asynchronous) and
  returns after ``jax.block_until_ready`` on the last one's outputs.
  """

  def __init__(self, compiled, state, batch, *, info: dict[str, Any], steps: int = 1):
    self.compiled, self.state, self.batch, self.info = compiled, state, batch, info
    self.steps = steps

  def __call__(self):
    for _ in range(self.steps):
      self.state, metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return metrics


def make_jax_step(
    case: dict[str, Any], mesh, seed: int = 0, compiler_options: dict[str, str] | None = None
) -> JaxRunner:
  """The ltjax train step of ``case``, compiled (phases timed), with its state and batch.

  ``compiler_options``: XLA options that replace make_train_step's (None: keep them).
  """
  state = train.create_train_state(
      build_jax_model(case),
      optim.torch_sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY),
      input_shape=case['image'],
      seed=seed,
      mesh=mesh,
  )
  batch = jax_batch(case, mesh, seed)
  objective = losses.simple_objective(
      functools.partial(losses.softmax_cross_entropy, reduction='mean')
  )
  step = train.make_train_step(state, mesh, objective=objective)
  t0 = time.perf_counter()
  lowered = step.lower(state, batch)
  t1 = time.perf_counter()
  compiled = lowered.compile(compiler_options)  # None: the jit's (make_train_step's).
  t2 = time.perf_counter()
  info = {
      'trace_lower_s': t1 - t0,
      'compile_s': t2 - t1,
      'params': sum(x.size for x in jax.tree.leaves(state.params)),
  }
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    info['gflop'] = float(cost.get('flops', 0.0)) / 1e9
  except Exception:  # pylint: disable=broad-except
    pass
  return JaxRunner(compiled, state, batch, info=info)


# ----------------------------------------------------------------------------
# Driver.


def parse_args(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
      '--cases', default='resnet32,small_cnn', help=f'comma-separated subset of {sorted(CASES)}'
  )
  p.add_argument(
      '--quick',
      action='store_true',
      help='few repetitions, no load wait, results not written unless --out',
  )
  p.add_argument('--no-torch', action='store_true', help='skip the PyTorch comparison')
  p.add_argument(
      '--repeats',
      type=int,
      default=None,
      help='timed steps per measurement (default 12; --quick 3)',
  )
  p.add_argument('--warmup', type=int, default=2, help='untimed steps after compiling')
  p.add_argument(
      '--torch-threads',
      type=int,
      default=None,
      help='torch.set_num_threads (default: the core count)',
  )
  p.add_argument(
      '--torch-device',
      default='auto',
      help="PyTorch device: 'cpu', 'cuda' or 'auto' (cuda when available)",
  )
  p.add_argument(
      '--torch-channels-last', action='store_true', help='also time PyTorch eager in channels_last'
  )
  p.add_argument(
      '--torch-compile',
      action='store_true',
      help='also time PyTorch with torch.compile(model) (compile time reported)',
  )
  p.add_argument(
      '--steps-per-sample',
      type=int,
      default=None,
      help='steps run back to back per timed sample, blocking after the last '
      '(default: 1 on CPU, 10 on a GPU); times are per step',
  )
  p.add_argument(
      '--compile-cache',
      default=None,
      metavar='DIR',
      help="use JAX's persistent compilation cache in DIR and also report a " 'warm-cache compile',
  )
  p.add_argument(
      '--max-load',
      type=float,
      default=0.5,
      help='wait until the 1-min load average is below this (0: do not wait)',
  )
  p.add_argument('--max-wait', type=float, default=600, help='seconds to wait at most')
  p.add_argument(
      '--group-wait',
      type=float,
      default=300,
      help='before each timed group, wait up to this long while other processes '
      'use >= 0.25 cores (0: do not wait; --quick: 0)',
  )
  p.add_argument(
      '--out',
      default=None,
      help='results JSON path (default benchmarks/results/step_time.json; '
      '"" to skip; --quick skips unless given)',
  )
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
    log(
        f'WARNING: other processes used {other.cores:.2f} cores while timing {what}; '
        f'busy: {_common.busy_processes()[:3]}'
        + ('; re-timing' if not attempt and args.group_wait > 0 else '')
    )
    if args.group_wait <= 0:
      break
  return times, other.cores


def noise_fields(other_cores):
  return {
      'other_cpu_cores': other_cores,
      'noisy': (True if other_cores is not None and other_cores >= NOISY_CORES else None),
  }


def train_step_compiler_options(mesh):
  """The XLA options ``ltjax.train.make_train_step`` adds on this platform (None: none)."""
  try:
    return train_steps.compiler_options(mesh)
  except Exception as e:  # pylint: disable=broad-except
    return f'unknown: {type(e).__name__}'


def setup_compile_cache(directory: str) -> int:
  os.makedirs(directory, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', directory)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return len(os.listdir(directory))


def torch_reference_label(threads: int, device: str) -> str:
  return 'torch eager, cuda' if device == 'cuda' else f'torch eager, {_threads(threads)}'


def measure_case(name: str, args, mesh, torch_threads: int | None) -> list[dict[str, Any]]:
  """Compile + interleaved steady-state timing of one case; returns its rows."""
  case = CASES[name]
  steps = args.steps_per_sample
  rows = []
  cache_before = set(os.listdir(args.compile_cache)) if args.compile_cache else set()
  log(f'[{name}] building and compiling the ltjax train step')
  runner = make_jax_step(case, mesh)
  compile_note = 'cold (no persistent cache)'
  if args.compile_cache:
    new_entries = [
        f for f in set(os.listdir(args.compile_cache)) - cache_before if 'train_step' in f
    ]
    compile_note = (
        'cold (persistent-cache miss, entry written)'
        if new_entries
        else 'persistent-cache hit from an earlier run'
    )
  rows.append(
      _common.record(
          f'{name}/jax',
          'compile_time',
          runner.info['compile_s'],
          's',
          trace_lower_s=runner.info['trace_lower_s'],
          cache=compile_note,
      )
  )
  if args.compile_cache:
    jax.clear_caches()
    warm = make_jax_step(case, mesh)
    rows.append(
        _common.record(
            f'{name}/jax',
            'compile_time_warm_cache',
            warm.info['compile_s'],
            's',
            trace_lower_s=warm.info['trace_lower_s'],
            cache='persistent cache populated, in-memory caches cleared',
        )
    )
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
        tstep, tinfo = make_torch_step(
            case, threads=torch_threads, device=args.torch_device, steps=steps, **kw
        )
      except Exception as e:  # pylint: disable=broad-except
        torch_errors[label] = f'{type(e).__name__}: {str(e)[:300]}'
        log(f'[{name}] {label} unavailable: {torch_errors[label]}')
        continue
      fns[label], tinfos[label] = tstep, tinfo
      if tinfo['params'] != runner.info['params']:
        log(
            f'WARNING: parameter counts differ: jax {runner.info["params"]} '
            f'{label} {tinfo["params"]}'
        )
  log(
      f'[{name}] timing {args.repeats} interleaved samples of {steps} step(s) after '
      f'{args.warmup} warm-up'
  )
  times, other = timed_group(fns, args, repeats=args.repeats, warmup=args.warmup, what=name)
  times = {k: [t / steps for t in v] for k, v in times.items()}  # per step
  stats = {k: _common.summarize(v) for k, v in times.items()}
  js = stats['jax']
  ts = stats.get('torch')
  gflop = runner.info.get('gflop')
  reference = torch_reference_label(torch_threads, args.torch_device) if torch_threads else None
  extra_ratios = {
      f'ratio_vs_{k}': js['median_ms'] / v['median_ms']
      for k, v in stats.items()
      if k not in ('jax', 'torch')
  }
  rows.append(
      _common.record(
          f'{name}/jax',
          'step_time',
          js['median_ms'],
          'ms',
          ratio=(js['median_ms'] / ts['median_ms'] if ts else None),
          reference=(reference if ts else None),
          **extra_ratios,
          min_ms=js['min_ms'],
          p25_ms=js['p25_ms'],
          p75_ms=js['p75_ms'],
          n=js['n'],
          steps_per_sample=steps,
          batch=case['batch'],
          dtype=case.get('dtype', 'float32'),
          images_per_s=case['batch'] / js['median_ms'] * 1e3,
          params=runner.info['params'],
          xla_gflop_per_step=gflop,
          **noise_fields(other),
          note=None if ts else 'torch not importable or --no-torch: no comparison',
          torch_errors=torch_errors or None,
      )
  )
  for label, tinfo in tinfos.items():
    st = stats[label]
    if 'compile_s' in tinfo:
      rows.append(
          _common.record(
              f'{name}/{label}',
              'compile_time',
              tinfo['compile_s'],
              's',
              note='torch.compile + first step (inductor, cold)',
          )
      )
    rows.append(
        _common.record(
            f'{name}/{label}',
            'step_time',
            st['median_ms'],
            'ms',
            threads=torch_threads,
            device=tinfo['device'],
            channels_last=tinfo['channels_last'],
            autocast_bf16=tinfo['autocast_bf16'],
            compiled='compile_s' in tinfo,
            min_ms=st['min_ms'],
            p25_ms=st['p25_ms'],
            p75_ms=st['p75_ms'],
            n=st['n'],
            steps_per_sample=steps,
            batch=case['batch'],
            images_per_s=case['batch'] / st['median_ms'] * 1e3,
            params=tinfo['params'],
            **noise_fields(other),
        )
    )
  return rows


def main(argv=None) -> int:
  args = parse_args(argv)
  threads = args.torch_threads or _common.core_count()
  have_torch = torch is not None and not args.no_torch
  if args.no_torch:
    log('PyTorch comparison skipped (--no-torch).')
  elif not have_torch:
    log('PyTorch is not importable: running the JAX side only.')
  else:
    torch.set_num_threads(threads)
    if args.torch_device == 'auto':
      args.torch_device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if args.torch_device == 'cuda':
      torch.backends.cudnn.benchmark = True  # XLA autotunes its convolutions too.
      log(
          f'torch {torch.__version__} on {torch.cuda.get_device_name(0)} (cudnn.benchmark on, '
          f'cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, '
          f'matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32})'
      )
    else:
      log(
          f'torch.set_num_threads({threads}) (= the {_common.core_count()} cores this process '
          f'may use), torch {torch.__version__}, mkldnn={torch.backends.mkldnn.is_available()}'
      )

  quiet = None
  if args.max_load > 0 and not args.quick:
    quiet = _common.wait_for_quiet(args.max_load, args.max_wait)
    if not quiet['quiet']:
      log(
          f'WARNING: load average still {quiet["load_after"]:.2f}; busy: '
          f'{_common.busy_processes()}'
      )
  if args.compile_cache:
    n = setup_compile_cache(args.compile_cache)
    log(f'persistent compilation cache: {args.compile_cache} ({n} entries before)')

  mesh = sharding.make_mesh()
  log(f'jax {jax.__version__} on {jax.devices()[0].device_kind} x{len(jax.devices())}')
  if args.steps_per_sample is None:
    args.steps_per_sample = 1 if jax.default_backend() == 'cpu' else 10

  t_start = time.perf_counter()
  rows = []
  for name in args.cases:
    case_rows = measure_case(name, args, mesh, threads if have_torch else None)
    for r in case_rows:
      _common.emit(r)
    rows += case_rows
  elapsed = time.perf_counter() - t_start
  log(f'done in {elapsed:.0f}s (after the load wait)')
  if args.out:
    path = _common.write_results(
        args.out,
        rows,
        settings={
            'repeats': args.repeats,
            'warmup': args.warmup,
            'torch_threads': threads if have_torch else None,
            'torch_device': args.torch_device if have_torch else None,
            'steps_per_sample': args.steps_per_sample,
            'torch_channels_last': args.torch_channels_last,
            'torch_compile': args.torch_compile,
            'cases': args.cases,
            'train_step_compiler_options': train_step_compiler_options(mesh),
            'quick': args.quick,
            'compile_cache': args.compile_cache,
            'lr': LR,
            'momentum': MOMENTUM,
            'weight_decay': WEIGHT_DECAY,
        },
        load={
            'wait': quiet,
            'load_at_end': _common.load_average(),
            'busy_at_end': _common.busy_processes(),
        },
        elapsed_s=round(elapsed, 1),
    )
    log(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
