"""The CIFAR ResNet-32 train step with BatchNormReLU and with nn.BatchNorm + nn.relu.

``ltjax.models.batch_norm_relu.BatchNormReLU`` (BN, shortcut and ReLU as one op
with a closed-form backward) replaced ``nn.BatchNorm`` + ``nn.relu`` in the
CIFAR ResNets. This script times, interleaved round-robin in one process, the
real ltjax train step (``step_time.make_jax_step``: ResNet-32, batch 128 of
32x32x3, 100 classes, SGD) in these variants:

  fused             ltjax's backbone (BatchNormReLU) with make_train_step's CPU
                    compile option (YNNPACK for dots and reductions).
  unfused           the same network with ``UnfusedBatchNormReLU``
                    (nn.BatchNorm + nn.relu, autodiff), same option.
  unfused_ynn_eltwise  unfused, with YNNPACK also fusing the elementwise ops:
                    ltjax's CPU step before BatchNormReLU.
  torch             the PyTorch eager twin of step_time.py (``--no-torch`` skips it).

Each row's ``ratio`` is its time over the ``fused`` time of the same run
(``reference``); the fused row carries its ratio to each of the others. On
another platform than CPU the YNNPACK variant is skipped.

Usage:
  python benchmarks/batch_norm_relu.py            # ~2 min on 2 cores, writes results/
  python benchmarks/batch_norm_relu.py --quick    # fewer samples, not written
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

import _common
from _common import log
import step_time
from ltjax.models import batch_norm_relu
from ltjax.models import resnet_cifar
from ltjax.train import sharding
from ltjax.train import steps as train_steps

# pylint: enable=g-import-not-at-top,wrong-import-position

CASE = step_time.CASES['resnet32']
_YNN_ELTWISE = (
    'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_ELTWISE'
)


@contextlib.contextmanager
def unfused_backbone():
  """ResNet-32 built, traced and compiled with nn.BatchNorm + nn.relu."""
  fused = resnet_cifar.BatchNormReLU
  resnet_cifar.BatchNormReLU = batch_norm_relu.UnfusedBatchNormReLU
  try:
    yield
  finally:
    resnet_cifar.BatchNormReLU = fused


def runners(mesh, with_torch: bool, threads: int):
  """name -> blocking step callable, and name -> its info."""
  out = {'fused': step_time.make_jax_step(CASE, mesh)}
  with unfused_backbone():
    out['unfused'] = step_time.make_jax_step(CASE, mesh)
    if jax.default_backend() == 'cpu':
      out['unfused_ynn_eltwise'] = step_time.make_jax_step(
          CASE, mesh, compiler_options={'xla_cpu_experimental_ynn_fusion_type': _YNN_ELTWISE}
      )
  infos = {name: runner.info for name, runner in out.items()}
  if with_torch:
    out['torch'], infos['torch'] = step_time.make_torch_step(CASE, threads=threads)
  return out, infos


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--quick', action='store_true', help='6 samples, not written to results/')
  p.add_argument('--repeats', type=int, default=12)
  p.add_argument('--no-torch', action='store_true')
  p.add_argument('--max-load', type=float, default=0.5, help='wait for this load average')
  p.add_argument('--max-wait', type=float, default=600)
  p.add_argument(
      '--out', default=os.path.join(os.path.dirname(__file__), 'results', 'batch_norm_relu.json')
  )
  args = p.parse_args(argv)
  repeats = 6 if args.quick else args.repeats
  with_torch = step_time.torch is not None and not args.no_torch
  threads = _common.core_count()
  if with_torch:
    step_time.torch.set_num_threads(threads)
  quiet = None if args.quick else _common.wait_for_quiet(args.max_load, args.max_wait)
  mesh = sharding.make_mesh()
  log(f'[resnet32] compiling {"4" if with_torch else "3"} variants')
  fns, infos = runners(mesh, with_torch, threads)
  t0 = time.perf_counter()
  with _common.OtherCpu() as other:
    times = _common.time_interleaved(fns, repeats=repeats, warmup=2)
  elapsed = time.perf_counter() - t0
  stats = {name: _common.summarize(t) for name, t in times.items()}
  fused_ms = stats['fused']['median_ms']
  rows = []
  for name, s in stats.items():
    extra = {
        k: v
        for k, v in infos[name].items()
        if k in ('compile_s', 'params', 'threads', 'gflop') and v is not None
    }
    if name == 'fused':
      extra.update(
          {
              f'ratio_to_{other_name}': round(fused_ms / o['median_ms'], 3)
              for other_name, o in stats.items()
              if other_name != 'fused'
          }
      )
    else:
      extra.update(ratio=round(s['median_ms'] / fused_ms, 3), reference='fused, same run')
    rows.append(
        _common.emit(
            _common.record(
                f'resnet32/{name}',
                'step_time',
                s['median_ms'],
                'ms',
                **{k: v for k, v in s.items() if k != 'median_ms'},
                **extra,
                batch=CASE['batch'],
                other_cpu_cores=other.cores,
            )
        )
    )
  log(f'timed in {elapsed:.0f}s')
  if not args.quick:
    path = _common.write_results(
        args.out,
        rows,
        settings={
            'repeats': repeats,
            'torch_threads': threads if with_torch else None,
            'train_step_compiler_options': train_steps.compiler_options(mesh),
            'unfused_ynn_eltwise_option': _YNN_ELTWISE,
        },
        load={'wait': quiet, 'load_at_end': _common.load_average()},
    )
    log(f'wrote {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
