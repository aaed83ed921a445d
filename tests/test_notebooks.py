"""Tests for notebooks/: committed without outputs, and run end to end in their smoke setting."""

# Each notebook runs in a fresh IPython kernel of this interpreter (a kernelspec written to a
# temporary directory, so no user-level ``python3`` kernelspec can substitute another Python),
# with LTJAX_NOTEBOOK_SMOKE=1 (a few training steps) and LTJAX_OFFLINE=1 (the data must be in
# place: no download, no pip), in a temporary working directory. The kernel sees one CPU
# device, as a user's would: the simulated devices of conftest.py are removed from XLA_FLAGS.

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from helpers import REPO
from helpers import requires_fashion_mnist

nbformat = pytest.importorskip('nbformat')
NOTEBOOKS = os.path.join(REPO, 'notebooks')
NAMES = ('quickstart', 'diagnostics')
CELL_TIMEOUT_S = 300


def _load(name):
  return nbformat.read(os.path.join(NOTEBOOKS, f'{name}.ipynb'), as_version=4)


@pytest.mark.parametrize('name', NAMES)
def test_notebook_is_committed_clean(name):
  nb = _load(name)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == 'python3'
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == 'code':
      assert cell.outputs == [], f'{name}.ipynb cell {i} has outputs: clear them.'
      assert cell.execution_count is None, f'{name}.ipynb cell {i} has an execution count.'
    # Colab-ready: nothing that only exists on one machine.
    assert not re.search(
        r'/(work|home|Users|tmp)/', cell.source
    ), f'{name}.ipynb cell {i} names a local path.'
  first_code = next(cell for cell in nb.cells if cell.cell_type == 'code')
  assert 'LTJAX_PIP_SPEC' in first_code.source and 'import ltjax' in first_code.source


def _setup_cell(name):
  return next(cell for cell in _load(name).cells if cell.cell_type == 'code').source


@pytest.mark.parametrize('name', NAMES)
def test_setup_cell_uses_the_enclosing_checkout(name):
  # Jupyter started in notebooks/: configs/ is not importable from there, the cell finds it above.
  code = _setup_cell(name) + '\nimport configs.default\nprint(configs.default.__file__)'
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'LTJAX_DATA_DIR')}
  env['LTJAX_OFFLINE'] = '1'
  out = subprocess.run(
      [sys.executable, '-c', code],
      cwd=NOTEBOOKS,
      env=env,
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert out.strip().endswith(os.path.join(REPO, 'configs', 'default.py')), out


@pytest.mark.parametrize('name', NAMES)
def test_setup_cell_offline_never_installs(name, tmp_path):
  # Without site-packages (-S) ltjax is missing: offline, the cell must refuse to clone or pip.
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  env['LTJAX_OFFLINE'] = '1'
  result = subprocess.run(
      [sys.executable, '-S', '-c', _setup_cell(name)],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
  )
  assert result.returncode != 0 and 'LTJAX_OFFLINE=1 forbids' in result.stderr, result.stderr
  assert os.listdir(tmp_path) == []


def _kernel_manager(tmp_dir):
  from jupyter_client.kernelspec import KernelSpecManager  # pylint: disable=g-import-not-at-top
  from jupyter_client.manager import KernelManager  # pylint: disable=g-import-not-at-top

  spec_dir = os.path.join(tmp_dir, 'kernels', 'ltjax-test')
  os.makedirs(spec_dir)
  with open(os.path.join(spec_dir, 'kernel.json'), 'w') as f:
    json.dump(
        {
            'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
            'display_name': 'ltjax test',
            'language': 'python',
        },
        f,
    )
  specs = KernelSpecManager(kernel_dirs=[os.path.dirname(spec_dir)])
  return KernelManager(kernel_name='ltjax-test', kernel_spec_manager=specs)


def _kernel_env():
  env = dict(os.environ)
  flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', env.get('XLA_FLAGS', ''))
  env['XLA_FLAGS'] = flags.strip()
  if not env['XLA_FLAGS']:
    del env['XLA_FLAGS']
  env.pop('MPLBACKEND', None)  # The kernel's own inline backend, as in Jupyter and Colab.
  # configs/ is importable from a checkout, as in Colab after the notebook's git clone.
  env['PYTHONPATH'] = os.pathsep.join(p for p in (REPO, env.get('PYTHONPATH')) if p)
  env['LTJAX_NOTEBOOK_SMOKE'] = '1'
  env['LTJAX_OFFLINE'] = '1'
  env.pop('LTJAX_DATA_DIR', None)
  env.setdefault(
      'JAX_COMPILATION_CACHE_DIR',
      os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache')),
  )
  env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')
  env['JUPYTER_PLATFORM_DIRS'] = '1'
  return env


def _execute(name, tmp_path):
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  nb = _load(name)
  workdir = tmp_path / 'cwd'
  workdir.mkdir()
  client = nbclient.NotebookClient(
      nb,
      km=_kernel_manager(str(tmp_path)),
      timeout=CELL_TIMEOUT_S,
      resources={'metadata': {'path': str(workdir)}},
  )
  client.execute(env=_kernel_env())  # Raises CellExecutionError on the first failing cell.
  for i, cell in enumerate(nb.cells):
    for output in cell.get('outputs', ()):
      assert output.output_type != 'error', f'cell {i}: {output}'
  images = sum(
      'image/png' in output.get('data', {})
      for cell in nb.cells
      for output in cell.get('outputs', ())
  )
  # Offline: no checkout of ltjax, no pip install, no download.
  assert not (workdir / 'ltjax-src').exists()
  assert not (workdir / 'fashion-mnist').exists()
  return workdir, images


@requires_fashion_mnist
def test_quickstart_notebook(tmp_path):
  workdir, images = _execute('quickstart', tmp_path)
  run = workdir / 'runs' / 'quickstart_smoke'
  for stage in (run, run / 'stage2'):
    assert (stage / 'metrics.jsonl').is_file()
    assert (stage / 'per_class_accuracy.png').is_file()
  report = json.loads((run / 'stage2' / 'report' / 'report.json').read_text())
  assert len(report['logits_magnitude']) == 10 and report['sharpness'] is not None
  # 2 per-class PNGs, the learning curve (inline matplotlib) and 2 report plots.
  assert images >= 5, images


@requires_fashion_mnist
def test_diagnostics_notebook(tmp_path):
  workdir, images = _execute('diagnostics', tmp_path)
  run = workdir / 'runs' / 'ce_lort_smoke'
  reports = [json.loads((d / 'report' / 'report.json').read_text()) for d in (run, run / 'stage2')]
  assert [r['meta']['loss'] for r in reports] == ['cross_entropy', 'lort']
  assert (run / 'comparison' / 'comparison.txt').is_file()
  assert glob.glob(str(run / 'comparison' / '*.png'))
  # compare_reports' plots and the notebook's own figures (LORT, norms, heat maps, sharpness).
  assert images >= 8, images
