"""ltjax.train.resume_check: a rerun resumes only the same run; a changed one is refused."""

import hashlib
import json
import os

import pytest

from helpers import read_rows
from helpers import tiny_config
from ltjax import train
from ltjax.train import resume_check


def snapshot(workdir):
  """path -> sha256 of every file under workdir."""
  out = {}
  for root, _, files in os.walk(workdir):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, workdir)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('resume') / 'run')
  config = tiny_config(num_train_steps=4, checkpoint_every_steps=2)
  train.train_and_evaluate(config, workdir)
  return config, workdir


@pytest.mark.parametrize(
    'key,value',
    [('model.name', 'resnet32'), ('batch_size', 32), ('seed', 1), ('loss.name', 'focal')],
)
def test_a_changed_run_is_refused_and_the_workdir_left_untouched(finished_run, key, value):
  config, workdir = finished_run
  before = snapshot(workdir)
  changed = tiny_config(num_train_steps=4, checkpoint_every_steps=2, **{key: value})
  with pytest.raises(ValueError, match=rf'(?s)another config.*  {key}: .*--resume_allow={key}'):
    train.train_and_evaluate(changed, workdir)
  assert snapshot(workdir) == before  # config.json's bytes and every checkpoint.


def test_watch_keys_and_later_stages_may_change(finished_run):
  config, workdir = finished_run
  watch = tiny_config(
      num_train_steps=4,
      checkpoint_every_steps=2,
      log_every_steps=1,
      eval_batch_size=100,
      progress_bar=True,
      **{'stage2.optim.lr': 0.5, 'posthoc.grid': (1.0,)},
  )
  assert resume_check.check_resume(watch, workdir, stage1=True) == {}
  with pytest.raises(ValueError, match='stage2.optim.lr: 0.1 -> 0.5'):  # Not for stage 2.
    resume_check.check_resume(watch, workdir, stage1=False)


def test_a_key_added_since_the_record_is_no_difference_at_its_default(finished_run, tmp_path):
  # A run recorded before ltjax had sam.adaptive: it trained as the key's default does.
  config, workdir = finished_run
  with open(os.path.join(workdir, 'config.json')) as f:
    recorded = json.load(f)
  del recorded['sam']['adaptive']
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(recorded, f)
  assert resume_check.check_resume(config, str(tmp_path), stage1=False) == {}
  changed = tiny_config(num_train_steps=4, checkpoint_every_steps=2, **{'sam.adaptive': True})
  with pytest.raises(ValueError, match=r"sam.adaptive: '\(absent\)' -> True"):
    resume_check.check_resume(changed, str(tmp_path), stage1=False)
  # A key the record has and the config lacks (removed from ltjax) still counts.
  recorded['sam']['adaptive'], recorded['sam']['retired'] = False, 1
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(recorded, f)
  with pytest.raises(ValueError, match=r"sam.retired: 1 -> '\(absent\)'"):
    resume_check.check_resume(config, str(tmp_path), stage1=False)


def test_an_allowed_change_resumes_and_keeps_the_earlier_config(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(num_train_steps=4), workdir)
  longer = tiny_config(num_train_steps=6)
  with pytest.raises(ValueError, match='num_train_steps: 4 -> 6'):
    train.train_and_evaluate(longer, workdir)
  state, _ = train.train_and_evaluate(longer, workdir, resume_allow=('num_train_steps',))
  assert int(state.step) == 6
  assert os.path.exists(os.path.join(workdir, 'config.1.json'))
  assert train.checkpoint.load_config(workdir).num_train_steps == 6
  assert '"num_train_steps": 4' in open(os.path.join(workdir, 'config.1.json')).read()
  assert max(r['step'] for r in read_rows(workdir)) == 6
