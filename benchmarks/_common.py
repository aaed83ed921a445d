"""Shared helpers for the scripts in ``benchmarks/``.

The project's benchmark convention:

* every measured case is one JSON object printed on its own stdout line, with
  at least ``name``, ``metric``, ``value`` and ``unit``; comparisons against a
  reference implementation add ``ratio`` (ours / reference, so > 1 means we are
  slower) and ``reference``;
* the same list is written to ``benchmarks/results/<script>.json`` together
  with the machine (CPU model, core count, accelerator kind, library versions),
  the command line and the date.

Everything here is standard library only, so a benchmark can import it before
deciding which heavy frameworks to load.
"""

from __future__ import annotations

import datetime
import importlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


# --------------------------------------------------------------------------
# Machine description.


def cpu_model() -> str:
  """The CPU's 'model name' from /proc/cpuinfo (platform.processor() elsewhere)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.lower().startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or 'unknown'


def cpu_flags(wanted=('avx', 'avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile')) -> list[str]:
  """The SIMD-relevant subset of the CPU flags in /proc/cpuinfo."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          flags = set(line.split(':', 1)[1].split())
          return [w for w in wanted if w in flags]
  except OSError:
    pass
  return []


def core_count() -> int:
  """Cores this process may run on (the affinity mask, else os.cpu_count())."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def load_average() -> float | None:
  """The 1-minute load average, or None where the OS does not provide it."""
  try:
    return os.getloadavg()[0]
  except (AttributeError, OSError):
    return None


def package_version(module: str) -> str | None:
  """``module.__version__`` if it imports, else None (without side effects on failure)."""
  try:
    return getattr(importlib.import_module(module), '__version__', 'unknown')
  except Exception:  # pylint: disable=broad-except
    return None


def distribution_version(*names: str) -> str | None:
  """'name==version' of the first installed distribution of ``names`` (pip names)."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  for name in names:
    try:
      return f'{name}=={metadata.version(name)}'
    except metadata.PackageNotFoundError:
      continue
  return None


def machine_info(
    packages: Iterable[str] = ('jax', 'jaxlib', 'flax', 'optax', 'torch', 'numpy')
) -> dict[str, Any]:
  """CPU, cores, accelerator kind, library versions and relevant env variables."""
  info: dict[str, Any] = {
      'hostname': platform.node(),
      'platform': platform.platform(),
      'python': platform.python_version(),
      'cpu_model': cpu_model(),
      'cpu_flags': cpu_flags(),
      'cores': core_count(),
      'load_average_1min': load_average(),
      'versions': {p: package_version(p) for p in packages},
      'env': {
          k: os.environ[k]
          for k in (
              'XLA_FLAGS',
              'OMP_NUM_THREADS',
              'MKL_NUM_THREADS',
              'JAX_PLATFORMS',
              'XLA_PYTHON_CLIENT_MEM_FRACTION',
              'XLA_PYTHON_CLIENT_PREALLOCATE',
              'CUDA_VISIBLE_DEVICES',
          )
          if k in os.environ
      },
  }
  if sys.modules.get('jax') is not None or info['versions'].get('jax'):
    try:
      import jax  # pylint: disable=g-import-not-at-top

      devices = jax.devices()
      info['jax_backend'] = jax.default_backend()
      info['jax_device_kind'] = devices[0].device_kind
      info['jax_device_count'] = len(devices)
      # Precision of float32 matmuls/convolutions (on NVIDIA GPUs XLA's
      # 'default' lets them use TF32 tensor cores).
      info['jax_default_matmul_precision'] = str(jax.config.jax_default_matmul_precision)
      if info['jax_backend'] == 'gpu':
        info['jax_cuda_plugin'] = distribution_version('jax-cuda13-plugin', 'jax-cuda12-plugin')
    except Exception as e:  # pylint: disable=broad-except
      info['jax_backend'] = f'unavailable: {e}'
  if info['versions'].get('torch'):
    import torch  # pylint: disable=g-import-not-at-top

    info['torch_num_threads'] = torch.get_num_threads()
    info['torch_mkldnn'] = bool(torch.backends.mkldnn.is_available())
    if torch.cuda.is_available():
      info['torch_cuda_device'] = torch.cuda.get_device_name(0)
      info['torch_cuda_version'] = torch.version.cuda
      info['torch_cudnn_version'] = torch.backends.cudnn.version()
      info['torch_tf32'] = {
          'matmul': torch.backends.cuda.matmul.allow_tf32,
          'cudnn': torch.backends.cudnn.allow_tf32,
          'cudnn_benchmark': torch.backends.cudnn.benchmark,
      }
  gpu = nvidia_smi()
  if gpu:
    info['gpu'] = gpu
  return info


def nvidia_smi() -> list[dict[str, str]] | None:
  """Name, memory, driver and clocks of each NVIDIA GPU (None without nvidia-smi)."""
  fields = ('name', 'memory.total', 'driver_version', 'clocks.max.sm', 'power.limit')
  try:
    out = subprocess.run(
        ['nvidia-smi', f'--query-gpu={",".join(fields)}', '--format=csv,noheader'],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return [
      dict(zip(fields, (v.strip() for v in line.split(','))))
      for line in out.splitlines()
      if line.strip()
  ]


# --------------------------------------------------------------------------
# Noise control.


def wait_for_quiet(
    threshold: float = 0.5,
    max_wait_s: float = 600.0,
    poll_s: float = 15.0,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
  """Polls the 1-minute load average until it is below ``threshold``.

  Returns what happened: the load at the start and end and how long we waited
  (gives up after ``max_wait_s`` and says so instead of failing).
  """
  start, t0 = load_average(), time.monotonic()
  load = start
  while load is not None and load >= threshold and time.monotonic() - t0 < max_wait_s:
    log(f'load average {load:.2f} >= {threshold}; waiting ({time.monotonic() - t0:.0f}s so far)')
    time.sleep(poll_s)
    load = load_average()
  waited = time.monotonic() - t0
  return {
      'load_before': start,
      'load_after': load,
      'waited_s': round(waited, 1),
      'quiet': load is None or load < threshold,
  }


def _cpu_seconds() -> tuple[float, float] | None:
  """(CPU-seconds used by everything, by this process and its waited-for children)."""
  try:
    with open('/proc/stat') as f:
      fields = [float(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  hz = os.sysconf('SC_CLK_TCK')
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
  busy = (sum(fields[:8]) - idle) / hz  # user nice system idle iowait irq softirq steal
  t = os.times()
  return busy, t.user + t.system + t.children_user + t.children_system


class OtherCpu:
  """Context manager: how many cores *other* processes kept busy meanwhile.

  Unlike the load average it excludes this process (whose own threads are the
  measurement) and reacts within seconds. ``cores`` is None where /proc is
  missing.

      with OtherCpu() as other:
        ...timed work...
      row['other_cpu_cores'] = other.cores
  """

  def __enter__(self):
    self._start, self._t0, self.cores = _cpu_seconds(), time.monotonic(), None
    return self

  def __exit__(self, *exc):
    end = _cpu_seconds()
    wall = time.monotonic() - self._t0
    if self._start and end and wall > 0:
      self.cores = max(0.0, ((end[0] - self._start[0]) - (end[1] - self._start[1])) / wall)
    return False


def other_cpu_cores(sample_s: float = 2.0) -> float | None:
  """Cores used by other processes over the next ``sample_s`` seconds (sleeps)."""
  with OtherCpu() as other:
    time.sleep(sample_s)
  return other.cores


def wait_for_idle(
    max_other_cores: float = 0.25,
    max_wait_s: float = 300.0,
    sample_s: float = 3.0,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
) -> dict[str, Any]:
  """Waits until other processes use < ``max_other_cores`` cores (sampled).

  Meant *between* measurement groups of one benchmark, where the load average
  still counts the benchmark's own work of the last minute.
  """
  t0 = time.monotonic()
  cores = other_cpu_cores(sample_s)
  first = cores
  while cores is not None and cores >= max_other_cores and time.monotonic() - t0 < max_wait_s:
    log(
        f'other processes use {cores:.2f} cores >= {max_other_cores}; waiting '
        f'({time.monotonic() - t0:.0f}s so far): {busy_processes()[:3]}'
    )
    time.sleep(10)
    cores = other_cpu_cores(sample_s)
  return {
      'other_cores_before': first,
      'other_cores_after': cores,
      'waited_s': round(time.monotonic() - t0, 1),
      'idle': cores is None or cores < max_other_cores,
  }


def busy_processes(min_cpu: float = 20.0, exclude_pid: int | None = None) -> list[str]:
  """'pid %cpu command' of other processes using >= ``min_cpu`` % CPU right now (best effort)."""
  try:
    out = subprocess.run(
        ['ps', '-eo', 'pid,pcpu,comm', '--sort=-pcpu'],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout.splitlines()[1:]
  except (OSError, subprocess.SubprocessError):
    return []
  busy = []
  for line in out:
    parts = line.split(None, 2)
    if (
        len(parts) == 3
        and float(parts[1]) >= min_cpu
        and int(parts[0]) != (exclude_pid or os.getpid())
    ):
      busy.append(line.strip())
  return busy


# --------------------------------------------------------------------------
# Timing.


def summarize(times_s: list[float]) -> dict[str, float]:
  """Median, min, inter-quartile range (ms) of a list of durations in seconds."""
  ms = sorted(t * 1e3 for t in times_s)
  q = statistics.quantiles(ms, n=4, method='inclusive') if len(ms) >= 2 else [ms[0]] * 3
  return {
      'median_ms': statistics.median(ms),
      'min_ms': ms[0],
      'p25_ms': q[0],
      'p75_ms': q[2],
      'n': len(ms),
  }


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
  """Times each blocking callable ``repeats`` times, round-robin.

  Every round runs each function once (the order rotates every round), so slow
  drifts in machine load affect all of them alike. ``warmup`` untimed rounds
  come first. Returns name -> list of durations in seconds.
  """
  names = list(fns)
  for _ in range(warmup):
    for n in names:
      fns[n]()
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(repeats):
    order = names[r % len(names) :] + names[: r % len(names)]
    for n in order:
      t0 = time.perf_counter()
      fns[n]()
      times[n].append(time.perf_counter() - t0)
  return times


# --------------------------------------------------------------------------
# Output.


def record(name: str, metric: str, value: float, unit: str, **extra) -> dict[str, Any]:
  """One result row; floats are rounded to 4 significant digits for readability."""

  def clean(v):
    if isinstance(v, float) and math.isfinite(v) and v != 0:
      return float(f'{v:.4g}')
    return v

  row = {'name': name, 'metric': metric, 'value': clean(value), 'unit': unit}
  row.update({k: clean(v) for k, v in extra.items() if v is not None})
  return row


def emit(row: dict[str, Any]) -> dict[str, Any]:
  """Prints one result row as a JSON line on stdout (and returns it)."""
  print(json.dumps(row), flush=True)
  return row


def write_results(path: str, rows: list[dict[str, Any]], **meta) -> str:
  """Writes {'benchmark', 'date', 'command', 'machine', ..., 'results': rows} to ``path``."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  doc = {
      'benchmark': os.path.splitext(os.path.basename(sys.argv[0]))[0],
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
      'machine': machine_info(),
  }
  doc.update(meta)
  doc['results'] = rows
  with open(path, 'w') as f:
    json.dump(doc, f, indent=1)
    f.write('\n')
  return path


def log(msg: str) -> None:
  """Progress messages go to stderr so that stdout stays JSON lines only."""
  print(msg, file=sys.stderr, flush=True)
