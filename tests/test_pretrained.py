"""Tests for ltjax.models.pretrained: torchvision weights into ltjax's ResNets."""

import os
import pickle
import pickletools
import struct
import subprocess
import sys
import threading
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from configs import base
from helpers import write_smuggling_pth
from helpers import REPO
from helpers import tiny_config
from ltjax import models
from ltjax import train
from ltjax.models import pretrained
from ltjax.param_paths import named_leaves
from ltjax.train import loop

TORCHVISION_BUILDERS = {
    'resnet10': lambda tv: tv.resnet.ResNet(tv.resnet.BasicBlock, [1, 1, 1, 1]),
    'resnet50': lambda tv: tv.resnet50(),
    'resnext50_32x4d': lambda tv: tv.resnext50_32x4d(),
}


def build(name, num_classes):
  config = base.get_config().model
  config.name = name
  return models.build_model(config, num_classes)


def abstract_variables(model, image_size=64):
  """{'params', 'batch_stats'} of ``model`` as shapes only (no initialisation)."""
  return jax.eval_shape(
      lambda: model.init(
          jax.random.PRNGKey(0), jnp.zeros((1, image_size, image_size, 3)), train=False
      )
  )


def random_state_dict(name, num_classes, seed=0):
  """A torchvision-named, torchvision-shaped random state dict of ltjax's ``name``."""
  rng = np.random.default_rng(seed)
  variables = abstract_variables(build(name, num_classes), 32)
  state = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in named_leaves(variables[collection]):
      torch_name = pretrained.torchvision_name(collection, path)
      shape = pretrained.to_torch_layout(np.zeros(leaf.shape), torch_name).shape
      state[torch_name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
      if torch_name.endswith('running_var'):
        state[torch_name.replace('running_var', 'num_batches_tracked')] = np.array(7, np.int64)
  return state


def randomised_torchvision(name):
  """torchvision's ``name`` in eval mode with random weights, BN affine and BN statistics."""
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  torch.manual_seed(0)
  model = TORCHVISION_BUILDERS[name](torchvision.models)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
    model.fc.bias.normal_()
  return model.eval()


@pytest.mark.parametrize('name', sorted(TORCHVISION_BUILDERS))
def test_torchvision_weights_give_torchvision_outputs(name, tmp_path):
  """.pth and .safetensors of a random torchvision model: same logits and features in ltjax."""
  torch = pytest.importorskip('torch')
  safetensors_torch = pytest.importorskip('safetensors.torch')
  model = randomised_torchvision(name)
  torch.save(model.state_dict(), tmp_path / 'w.pth')  # Default settings: the zip format.
  safetensors_torch.save_file(model.state_dict(), tmp_path / 'w.safetensors')
  expected = {k: v.numpy() for k, v in model.state_dict().items()}
  for file in ('w.pth', 'w.safetensors'):
    read = pretrained.read_state_dict(tmp_path / file)
    assert list(read) == list(expected) if file == 'w.pth' else set(read) == set(expected)
    for key, value in expected.items():
      np.testing.assert_array_equal(read[key], value, err_msg=f'{file} {key}')

  x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)  # NCHW.
  features = []
  model.avgpool.register_forward_hook(lambda m, i, out: features.append(out.flatten(1)))
  with torch.no_grad():
    logits_ref = model(torch.from_numpy(x)).numpy()
  features_ref = features[0].numpy()

  ours = build(name, 1000)
  abstract = abstract_variables(ours)
  params, batch_stats, summary = pretrained.load_torchvision(
      abstract['params'], abstract['batch_stats'], read
  )
  assert summary['head'] == 'loaded' and not summary['missing'] and not summary['ignored']
  assert summary['loaded'] == len([k for k in expected if 'num_batches' not in k])
  assert summary['values'] == sum(v.size for k, v in expected.items() if 'num_batches' not in k)
  logits, feats = jax.jit(lambda v, x: ours.apply(v, x, train=False))(
      {'params': params, 'batch_stats': batch_stats}, x.transpose(0, 2, 3, 1)  # NHWC.
  )
  for got, ref in ((feats, features_ref), (logits, logits_ref)):
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())


def test_torch_files_are_read_without_torch(tmp_path):
  """The numpy reader runs with torch unimportable: .pth (all dtypes) equals .safetensors."""
  torch = pytest.importorskip('torch')
  safetensors_torch = pytest.importorskip('safetensors.torch')
  state = {
      'float': torch.randn(3, 4),
      'half': torch.randn(3).half(),
      'bfloat16': torch.randn(2, 3).bfloat16(),
      'transposed': torch.randn(4, 5).t().contiguous(),
      'int64': torch.arange(5),
      'bool': torch.tensor([True, False]),
  }
  torch.save(
      {
          **state,
          'view': state['float'][1:, ::2],  # Shares 'float''s storage, offset and strided.
          'parameter': torch.nn.Parameter(torch.ones(2)),
      },
      tmp_path / 'w.pt',
  )
  safetensors_torch.save_file(state, tmp_path / 'w.safetensors')
  script = f"""
import sys
sys.modules['torch'] = None  # Any 'import torch' now fails.
import numpy as np
from ltjax.models import pretrained
a = pretrained.read_state_dict({str(tmp_path / 'w.pt')!r})
b = pretrained.read_state_dict({str(tmp_path / 'w.safetensors')!r})
for key in b:
  assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
assert np.array_equal(a['view'], a['float'][1:, ::2]) and a['parameter'].tolist() == [1, 1]
print('read without torch', sorted(a))
"""
  result = subprocess.run(
      [sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  assert result.returncode == 0, result.stderr
  assert 'read without torch' in result.stdout


def test_a_pickle_that_smuggles_os_system_is_refused_before_it_runs(tmp_path):
  marker = tmp_path / 'ran'
  path = tmp_path / 'evil.pth'
  evil = write_smuggling_pth(path, f'touch {marker}')
  assert ('GLOBAL', 'os system') in [(op.name, arg) for op, arg, _ in pickletools.genops(evil)]
  with pytest.raises(pretrained.RefusedGlobalError, match=r'evil\.pth: refused .* os\.system'):
    pretrained.read_state_dict(path)
  assert not marker.exists()


def test_a_tensor_past_the_end_of_its_storage_is_an_error(tmp_path):
  torch = pytest.importorskip('torch')
  torch.save({'conv1.weight': torch.ones(4, 3)}, tmp_path / 'w.pth')
  with (
      zipfile.ZipFile(tmp_path / 'w.pth') as good,
      zipfile.ZipFile(tmp_path / 'bad.pth', 'w') as bad,
  ):
    for name in good.namelist():  # The storage keeps 11 of its 12 floats.
      bad.writestr(name, good.read(name)[:44] if name.endswith('/data/0') else good.read(name))
  with pytest.raises(ValueError, match=r'bad\.pth: corrupt torch archive .* than its storage'):
    pretrained.read_state_dict(tmp_path / 'bad.pth')


def test_legacy_torch_files_and_other_files_are_refused_with_a_remedy(tmp_path):
  path = tmp_path / 'legacy.pth'
  try:
    import torch  # pylint: disable=g-import-not-at-top

    torch.save({'a': torch.ones(2)}, path, _use_new_zipfile_serialization=False)
  except ImportError:
    path.write_bytes(pretrained._LEGACY_MAGIC + b'.')  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r'legacy \(non-zip\) format.*safetensors'):
    pretrained.read_state_dict(path)
  (tmp_path / 'notes.txt').write_text('not weights')
  with pytest.raises(ValueError, match='neither a .safetensors file nor a torch.save zip'):
    pretrained.read_state_dict(tmp_path / 'notes.txt')
  with pytest.raises(FileNotFoundError, match='absent.pth'):
    pretrained.read_state_dict(tmp_path / 'absent.pth')


def test_mismatches_are_listed_and_nothing_is_loaded_silently():
  abstract = abstract_variables(build('resnet10', 10), 32)
  state = random_state_dict('resnet10', 10)
  del state['layer2.0.conv1.weight']
  state['layer3.0.bn1.running_var'] = np.ones(255, np.float32)
  state['layer5.0.conv1.weight'] = np.ones((8, 8, 3, 3), np.float32)
  with pytest.raises(pretrained.PretrainedMismatchError) as error:
    pretrained.load_torchvision(abstract['params'], abstract['batch_stats'], state, source='w.pth')
  message = str(error.value)
  assert 'w.pth does not fit the model: 3 tensor(s) differ' in message
  assert 'BasicBlock [1, 1, 1, 1, 1]' in message  # What the file looks like.
  assert (
      'layer3.0.bn1.running_var: expected (256,) (ltjax batch_stats '
      'backbone/stage3_block0/bn1/var), found (255,)' in message
  )
  assert (
      'layer2.0.conv1.weight: expected (128, 64, 3, 3) (ltjax params '
      'backbone/stage2_block0/conv1/kernel)' in message
  )
  assert 'layer5.0.conv1.weight: found (8, 8, 3, 3)' in message

  # Missing and extra names may be allowed explicitly; a wrong shape never is.
  relaxed = dict(allow_missing=True, allow_extra=True)
  with pytest.raises(pretrained.PretrainedMismatchError, match='1 tensor'):
    pretrained.load_torchvision(abstract['params'], abstract['batch_stats'], state, **relaxed)
  state['layer3.0.bn1.running_var'] = np.ones(256, np.float32)
  params, _, summary = pretrained.load_torchvision(
      abstract['params'], abstract['batch_stats'], state, **relaxed
  )
  assert [m.split(':')[0] for m in summary['missing']] == ['layer2.0.conv1.weight']
  assert [m.split(':')[0] for m in summary['ignored']] == ['layer5.0.conv1.weight']
  assert isinstance(params['backbone']['stage2_block0']['conv1']['kernel'], jax.ShapeDtypeStruct)


def test_the_classifier_loads_only_when_its_shape_matches():
  abstract = abstract_variables(build('resnet10', 10), 32)
  imagenet = random_state_dict('resnet10', 1000)  # An ImageNet fc: (1000, 512).
  params, _, summary = pretrained.load_torchvision(
      abstract['params'], abstract['batch_stats'], imagenet
  )
  assert (
      summary['head']
      == 'kept fresh (fc.weight (1000, 512) vs (10, 512) expected, fc.bias (1000,) vs (10,) expected)'
  )
  assert isinstance(params['head']['kernel'], jax.ShapeDtypeStruct)  # Not touched.
  np.testing.assert_array_equal(
      params['backbone']['stem_conv']['kernel'], imagenet['conv1.weight'].transpose(2, 3, 1, 0)
  )
  matching = random_state_dict('resnet10', 10)
  params, _, summary = pretrained.load_torchvision(
      abstract['params'], abstract['batch_stats'], matching
  )
  assert summary['head'] == 'loaded'
  np.testing.assert_array_equal(params['head']['kernel'], matching['fc.weight'].T)
  _, _, summary = pretrained.load_torchvision(
      abstract['params'], abstract['batch_stats'], matching, head='skip'
  )
  assert summary['head'].startswith('kept fresh')
  with pytest.raises(ValueError, match='is not one of them'):
    pretrained.load_pretrained(__file__, {}, {}, model_name='small_cnn')


def test_model_pretrained_starts_a_fresh_stage_1_only(tmp_path, monkeypatch):
  """resnet10 at 32 px, 1 step + a cached stage 2: stage 1 starts from the file, nothing else does."""
  state = random_state_dict('resnet10', 10, seed=1)
  path = str(tmp_path / 'resnet10.safetensors')
  safetensors_numpy.save_file(state, path)
  config = tiny_config(
      **{
          'model.name': 'resnet10',
          'model.pretrained': path,
          'data.synthetic.image_shape': (32, 32, 3),
          'data.augment': 'none',
          'batch_size': 8,
          'num_train_steps': 1,
          'log_every_steps': 1,
          'stage2.num_epochs': 1,
          'stage2.bn': 'frozen',  # With augment 'none': a feature cache, a cheap stage 2.
      }
  )
  initial, loads = [], []  # (stage name, step, params, batch_stats) of every initial state.
  real_initial_state, real_load = loop.initial_state, models.load_pretrained

  def spy_initial_state(stage, *args, **kwargs):
    start = real_initial_state(stage, *args, **kwargs)
    initial.append((stage.name, *jax.device_get((start.step, start.params, start.batch_stats))))
    return start  # Its buffers are donated to the first train step: copied above.

  monkeypatch.setattr(loop, 'initial_state', spy_initial_state)
  monkeypatch.setattr(
      models, 'load_pretrained', lambda *a, **k: loads.append(a) or real_load(*a, **k)
  )
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  assert [(name, int(step)) for name, step, _, _ in initial] == [('stage1', 0), ('stage2', 0)]
  assert len(loads) == 1
  _, _, params, batch_stats = initial[0]
  for collection, tree in (('params', params), ('batch_stats', batch_stats)):
    for leaf_path, leaf in named_leaves(tree):
      name = pretrained.torchvision_name(collection, leaf_path)
      np.testing.assert_array_equal(
          leaf, pretrained.from_torch_layout(state[name], name), err_msg=leaf_path
      )
  # Stage 2 starts from stage 1's checkpoint (one SGD step away from the file), not the file.
  stem = initial[1][2]['backbone']['stem_conv']['kernel']
  assert not np.array_equal(stem, params['backbone']['stem_conv']['kernel'])
  # Resuming the finished run restores its checkpoints and does not read the file again.
  train.train_and_evaluate(config, workdir)
  resumed = [(name, int(step)) for name, step, _, _ in initial[2:]]
  assert resumed[0] == ('stage1', 1) and resumed[1][0] == 'stage2' and resumed[1][1] > 0
  assert len(loads) == 1


def write_torch_zip(path, payload):
  """A torch.save-style archive whose data.pkl is ``payload``."""
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('w/data.pkl', payload)
    archive.writestr('w/version', '3\n')


def test_refused_and_corrupt_files_are_bad_input_naming_the_file(tmp_path):
  # The commands exit 2 (bad input) on a ValueError; these ended them with 1 ("a bug").
  evil = b'\x80\x02}X\x01\x00\x00\x00acos\nsystem\nX\x04\x00\x00\x00true\x85Rs.'
  write_torch_zip(tmp_path / 'evil.pth', evil)
  with pytest.raises(ValueError, match=r'evil\.pth: refused .* os\.system.*read as data, not code'):
    pretrained.read_state_dict(tmp_path / 'evil.pth')  # Was a pickle.UnpicklingError only.
  header = b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
  (tmp_path / 'w.safetensors').write_bytes(struct.pack('<Q', len(header) + 99) + header)
  with pytest.raises(ValueError, match=r'w\.safetensors: corrupt safetensors file'):
    pretrained.read_state_dict(tmp_path / 'w.safetensors')  # Was a SafetensorError.
  write_torch_zip(tmp_path / 'keys.pth', pickle.dumps({1: 2.0, 'fc.bias': 3}, protocol=2))
  with pytest.raises(ValueError, match=r'keys\.pth: .*names that are not strings: \[1\]'):
    pretrained.read_state_dict(tmp_path / 'keys.pth')


def test_a_value_that_is_no_tensor_is_listed_as_a_mismatch():
  abstract = abstract_variables(build('resnet10', 10), 32)
  state = random_state_dict('resnet10', 10)
  state['fc.weight'] = 3  # Was an AttributeError when the head's shape was compared.
  with pytest.raises(pretrained.PretrainedMismatchError, match=r'fc\.weight: expected .*found int'):
    pretrained.load_torchvision(
        abstract['params'], abstract['batch_stats'], state, allow_missing=False
    )


def test_damaged_archives_and_unsupported_dtypes_are_bad_input(tmp_path):
  torch_zip = tmp_path / 'crc.pth'
  write_torch_zip(torch_zip, pickle.dumps({'conv1.weight': 1.0}, protocol=2))
  raw = bytearray(torch_zip.read_bytes())
  raw[raw.index(b'conv1.weight')] ^= 1  # The member no longer matches its CRC.
  torch_zip.write_bytes(bytes(raw))
  with pytest.raises(ValueError, match=r'crc\.pth: corrupt torch archive'):
    pretrained.read_state_dict(torch_zip)  # Was zipfile.BadZipFile.
  header = b'{"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}'
  (tmp_path / 'fp8.safetensors').write_bytes(struct.pack('<Q', len(header)) + header + b'\x00\x00')
  with pytest.raises(ValueError, match=r'fp8\.safetensors: .*a dtype numpy lacks'):
    pretrained.read_state_dict(tmp_path / 'fp8.safetensors')  # Was an AttributeError.
  (tmp_path / 'folder.pth').mkdir()
  with pytest.raises(ValueError, match=r'folder\.pth is not a regular file'):
    pretrained.read_state_dict(tmp_path / 'folder.pth')  # Was IsADirectoryError.


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs here')
def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
  fifo = tmp_path / 'w.pth'
  os.mkfifo(fifo)
  outcome = {}

  def read():
    try:
      pretrained.read_state_dict(fifo)
    except Exception as e:  # pylint: disable=broad-except
      outcome['error'] = e

  thread = threading.Thread(target=read, daemon=True)
  thread.start()
  thread.join(20)
  if thread.is_alive():  # Opening the FIFO blocks until a writer comes: be one, then fail.
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    thread.join(10)
    pytest.fail('opening the FIFO blocked')
  assert isinstance(outcome.get('error'), ValueError), outcome
  assert 'w.pth is not a regular file' in str(outcome['error'])
