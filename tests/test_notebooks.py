"""Tests for notebooks/: committed without outputs, and run end to end in their smoke setting."""

# Each notebook runs in a fresh IPython kernel of this interpreter (a kernelspec written to a
# temporary directory, so no user-level ``python3`` kernelspec can substitute another Python),
# with LTJAX_NOTEBOOK_SMOKE=1 (a few training steps) and LTJAX_OFFLINE=1 (the data must be in
# place: no download, no pip), in a temporary working directory. The kernel sees one CPU
# device, as a user's would: the simulated devices of conftest.py are removed from XLA_FLAGS.
# The first code cell (installing ltjax when it is missing) is also run alone, with `python -S`
# (no site-packages, so no ltjax), to check that it fails with a clear message instead of
# reaching the network.

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
    # The runtime is what JAX sees, not a device file or a vendor tool.
    assert '/dev/accel' not in cell.source and 'nvidia-smi' not in cell.source, (name, i)
    assert not re.search(r'from configs\b|import configs\b', cell.source), (name, i)
  first_code = next(cell for cell in nb.cells if cell.cell_type == 'code').source
  assert 'import ltjax' in first_code and 'jax.default_backend()' in first_code
  # ltjax comes from where the user says (a Colab form field) or from an uploaded wheel: the
  # cell names no URL and clones nothing.
  assert 'LTJAX_SOURCE = \'\'  # @param {type:"string"}' in first_code
  assert 'ltjax-*.whl' in first_code
  assert '://' not in first_code and 'git clone' not in first_code


def _setup_cell(name):
  return next(cell for cell in _load(name).cells if cell.cell_type == 'code').source


def _setup_env(**changes):
  env = {k: v for k, v in os.environ.items() if not k.startswith('LTJAX_') and k != 'PYTHONPATH'}
  env['XLA_FLAGS'] = ''
  env.update(changes)
  return env


@pytest.mark.parametrize('name', NAMES)
def test_setup_cell_finds_ltjax_and_its_recipes(name):
  # ltjax importable (here the checkout's): the cell installs nothing, and the recipes are the
  # package's ltjax.configs -- the checkout's configs/, through the ltjax/configs link.
  code = _setup_cell(name) + '\nfrom ltjax.configs import default\nprint(default.__file__)'
  out = subprocess.run(
      [sys.executable, '-c', code],
      cwd=NOTEBOOKS,
      env=_setup_env(PYTHONPATH=REPO, LTJAX_OFFLINE='1', LTJAX_SOURCE='unused.whl'),
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  lines = out.splitlines()
  assert lines[0].startswith('LTJAX_SOURCE unused: ltjax is already installed'), out
  assert lines[1].startswith('ltjax ') and lines[1].endswith(f' from {REPO}/ltjax'), out
  assert lines[2].startswith('JAX ') and ' on ' in lines[2], out
  assert lines[-1] == os.path.join(REPO, 'ltjax', 'configs', 'default.py'), out


@pytest.mark.parametrize('name', NAMES)
def test_setup_cell_offline_never_installs(name, tmp_path):
  # Without site-packages (-S) ltjax is missing: offline, the cell must refuse to clone or pip.
  result = subprocess.run(
      [sys.executable, '-S', '-c', _setup_cell(name)],
      cwd=tmp_path,
      env=_setup_env(LTJAX_OFFLINE='1', LTJAX_SOURCE='ltjax-0.1.0-py3-none-any.whl'),
      capture_output=True,
      text=True,
  )
  assert result.returncode != 0 and 'LTJAX_OFFLINE=1 forbids' in result.stderr, result.stderr
  assert os.listdir(tmp_path) == []


def test_setup_cell_without_a_source_says_what_to_fill_in(tmp_path):
  # ltjax missing, online, and nothing to install from: a clear error before any pip or network.
  def setup(**env):
    return subprocess.run(
        [sys.executable, '-S', '-c', _setup_cell('quickstart')],
        cwd=tmp_path,
        env=_setup_env(**env),
        capture_output=True,
        text=True,
    )

  result = setup()
  assert result.returncode != 0, result.stdout
  assert 'ImportError: ltjax is not installed' in result.stderr, result.stderr
  assert 'Fill in LTJAX_SOURCE at the top of the cell' in result.stderr
  assert f'upload the wheel to {tmp_path}' in result.stderr
  result = setup(LTJAX_SOURCE='ltjax-0.1.0-py3-none-any.whl')
  assert result.returncode != 0
  assert "LTJAX_SOURCE = 'ltjax-0.1.0-py3-none-any.whl' is not a file" in result.stderr
  assert os.listdir(tmp_path) == [] and 'installing' not in result.stdout


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
  # ltjax (with its recipes, ltjax.configs) importable from the checkout, as in Colab once the
  # first cell has installed it.
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
  # Offline: no pip install, no download; only the runs.
  assert sorted(os.listdir(workdir)) == ['runs']
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
