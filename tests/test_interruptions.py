"""Interruptions outside the step loop: during an evaluation, between stages, a changed source.

Each case is interrupted in this process the way a kill or a SIGTERM would (an
exception out of an evaluation, or the stop handler called as the signal would
call it), then the same command is run again; the result must equal an
uninterrupted run's: the same final metrics, the same best checkpoint, the same
stage-2 source.
"""

import json
import os
import shutil
import signal

import chex
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import Interrupt
from helpers import tiny_config
from ltjax import train
from ltjax.train import loop
from ltjax.train import predict
from ltjax.train import stopping


def two_stage_config():
  """Stage 1: 3 epochs of 4 steps, evaluated every epoch; then 2 epochs of cRT from best."""
  config = tiny_config(
      **{
          'batch_size': 48,  # 216 images: 4 steps an epoch.
          'num_train_steps': -1,
          'num_epochs': 3,
          'eval_every_epochs': 1,
          'data.augment': 'none',
      }
  )
  s2 = config.stage2
  s2.num_epochs, s2.head, s2.init_from, s2.eval_every_epochs = 2, 'reinit', 'best', 1
  s2.optim.lr = 0.05
  return config


def final_record(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    record = json.load(f)
  return {
      name: (stage['step'], stage['test']['balanced_accuracy'], stage['test']['per_class_accuracy'])
      for name, stage in record['stages'].items()
  }


def best_step(workdir):
  return train.Checkpoints(workdir).best.best_step()


def final_params(workdir):
  """The parameters and statistics of the stage-2 checkpoint of its last step (8)."""
  path = os.path.join(workdir, 'stage2', 'checkpoints', '8', 'default')
  restored = ocp.PyTreeCheckpointer().restore(path)
  return {k: restored[k] for k in ('step', 'params', 'batch_stats')}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  train.train_and_evaluate(two_stage_config(), workdir)
  return workdir


def fail_evaluation(monkeypatch, when):
  """Makes ``predict.evaluate`` raise ``Interrupt`` on the calls where ``when(n)`` holds."""
  real = predict.evaluate
  calls = []

  def evaluate(*args, **kwargs):
    calls.append(1)
    if when(len(calls)):
      raise Interrupt(len(calls))
    return real(*args, **kwargs)

  monkeypatch.setattr(predict, 'evaluate', evaluate)
  return calls


@pytest.mark.parametrize('evaluation', [3, 2])  # Stage 1's final evaluation; a mid-run one.
def test_a_kill_during_an_evaluation_is_redone_on_resume(
    tmp_path, monkeypatch, uninterrupted, evaluation
):
  workdir = str(tmp_path / 'run')
  fail_evaluation(monkeypatch, lambda n: n == evaluation)  # Test split only: one per epoch.
  with pytest.raises(Interrupt):
    train.train_and_evaluate(two_stage_config(), workdir)
  steps = json.load(open(os.path.join(workdir, loop.Evaluations.FILENAME)))
  assert steps == [4 * i for i in range(1, evaluation)]  # The killed one is not recorded.
  monkeypatch.undo()
  train.train_and_evaluate(two_stage_config(), workdir)
  assert final_record(workdir) == final_record(uninterrupted)
  assert best_step(workdir) == best_step(uninterrupted)
  chex.assert_trees_all_equal(final_params(workdir), final_params(uninterrupted))  # Bitwise.
  assert json.load(open(os.path.join(workdir, loop.Evaluations.FILENAME))) == [4, 8, 12]
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert sorted(r['step'] for r in rows if r['split'] == 'test') == [4, 8, 12]


def test_an_earlier_attempt_whose_checkpoints_were_lost_is_neither_kept_nor_trusted(
    tmp_path, monkeypatch, uninterrupted
):
  """A killed attempt's records outlive its checkpoints (a study cell's, on a new machine)."""
  workdir = str(tmp_path / 'run')
  evaluated = os.path.join(workdir, loop.Evaluations.FILENAME)
  fail_evaluation(monkeypatch, lambda n: n == 3)  # Attempt 1: killed in step 12's evaluation.
  with pytest.raises(Interrupt):
    train.train_and_evaluate(two_stage_config(), workdir)
  assert json.load(open(evaluated)) == [4, 8]
  for lost in ('checkpoints', 'best'):  # Gone with its machine; the small records stayed.
    shutil.rmtree(os.path.join(workdir, lost))
  monkeypatch.undo()
  fail_evaluation(monkeypatch, lambda n: n == 1)  # Attempt 2, from step 0: killed in step 4's.
  with pytest.raises(Interrupt):
    train.train_and_evaluate(two_stage_config(), workdir)
  # Attempt 1's steps would make the resume skip step 4's evaluation and its best/ offer.
  assert json.load(open(evaluated)) == []
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert max(r['step'] for r in rows) == 4  # Attempt 1's rows up to step 12 are gone.
  monkeypatch.undo()
  calls = fail_evaluation(monkeypatch, lambda n: False)
  train.train_and_evaluate(two_stage_config(), workdir)
  assert len(calls) == 3 + 2  # Step 4's evaluation redone, then 8, 12 and stage 2's two.
  assert json.load(open(evaluated)) == [4, 8, 12]
  assert final_record(workdir) == final_record(uninterrupted)
  assert best_step(workdir) == best_step(uninterrupted)


def request_stop_on(monkeypatch, when):
  """Calls the command's stop handler as SIGTERM would, inside ``predict.predict``'s loop."""
  real = predict.predict
  calls = []

  def predict_and_signal(state, step, batches, **kwargs):
    calls.append(1)
    if when(len(calls)):
      stopping._active._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
    return real(state, step, batches, **kwargs)

  monkeypatch.setattr(predict, 'predict', predict_and_signal)


def test_sigterm_during_an_evaluation_stops_it_and_the_rerun_redoes_it(
    tmp_path, monkeypatch, uninterrupted
):
  workdir = str(tmp_path / 'run')
  request_stop_on(monkeypatch, lambda n: n == 3)  # During stage 1's last evaluation.
  with pytest.raises(stopping.Stopped, match='during the evaluation of step 12'):
    train.train_and_evaluate(two_stage_config(), workdir)
  assert not os.path.exists(os.path.join(workdir, 'stage2'))
  monkeypatch.undo()
  train.train_and_evaluate(two_stage_config(), workdir)
  assert final_record(workdir) == final_record(uninterrupted)


def test_sigterm_between_stages_stops_before_stage_2(tmp_path, uninterrupted):
  workdir = str(tmp_path / 'run')

  def signal_at_the_end_of_stage_1(step, state):
    del state
    if step == 12 and not os.path.exists(os.path.join(workdir, 'stage2')):
      stopping._active._handle(signal.SIGTERM, None)  # pylint: disable=protected-access

  with pytest.raises(stopping.Stopped, match='before stage2 started'):
    train.train_and_evaluate(two_stage_config(), workdir, hooks=[signal_at_the_end_of_stage_1])
  assert not os.path.exists(os.path.join(workdir, 'stage2', 'checkpoints'))
  train.train_and_evaluate(two_stage_config(), workdir)
  assert final_record(workdir) == final_record(uninterrupted)
  chex.assert_trees_all_equal(final_params(workdir), final_params(uninterrupted))


def test_the_stop_handler_is_one_for_the_command_and_uninstalled_after_it():
  before = signal.getsignal(signal.SIGTERM)
  with stopping.handling() as outer:
    with stopping.handling() as inner:
      assert inner is outer
    assert signal.getsignal(signal.SIGTERM) == outer._handle  # pylint: disable=protected-access
    stopping.check('nowhere')  # No request: nothing happens.
    outer._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
    with pytest.raises(stopping.Stopped, match=r'Stopped between cells \(SIGTERM\)'):
      stopping.check('between cells')
    with pytest.raises(stopping.Interrupted):
      stopping.check_batch()
  assert signal.getsignal(signal.SIGTERM) == before
  stopping.check('after the command')  # No handler: nothing happens.
  np.testing.assert_equal(stopping._active, None)  # pylint: disable=protected-access


def test_extending_a_finished_two_stage_run_redoes_stage_2_from_the_new_stage_1(tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(two_stage_config(), workdir)
  first = json.load(open(os.path.join(workdir, 'stage2', 'source.json')))
  assert (first['step'], first['which']) == (best_step(workdir), 'best')

  longer = two_stage_config()
  longer.num_epochs = 5  # The README's example: more epochs for a finished run.
  train.train_and_evaluate(longer, workdir, resume_allow=('num_epochs',))
  second = json.load(open(os.path.join(workdir, 'stage2', 'source.json')))
  assert second['sha256'] != first['sha256'] and second['step'] == best_step(workdir)
  # The stage-2 run trained from the old stage 1 is kept beside, not mixed in.
  assert json.load(open(os.path.join(workdir, 'stage2.1', 'source.json'))) == first
  # Stage 2 equals one trained from the extended stage 1 in a copy without any stage 2.
  fresh = str(tmp_path / 'fresh')
  shutil.copytree(workdir, fresh, ignore=shutil.ignore_patterns('stage2*', 'results.json'))
  train.train_and_evaluate(longer, fresh)
  assert final_record(workdir) == final_record(fresh)
  # Once more: nothing changed, nothing is redone.
  train.train_and_evaluate(longer, workdir, resume_allow=('num_epochs',))
  assert not os.path.exists(os.path.join(workdir, 'stage2.2'))


def test_an_allowed_change_of_the_model_is_refused_before_anything_is_written(tmp_path):
  workdir = str(tmp_path / 'run')
  config = tiny_config(num_train_steps=4)
  train.train_and_evaluate(config, workdir)
  before = {
      name: open(os.path.join(workdir, name), 'rb').read()
      for name in ('config.json', 'metrics.jsonl', 'results.json')
  }
  other = tiny_config(num_train_steps=4)
  other.model.head = 'cosine'
  with pytest.raises(ValueError, match=r"allowed change of \['model.head'\] changes the model"):
    train.train_and_evaluate(other, workdir, resume_allow=('model.head',))
  after = {name: open(os.path.join(workdir, name), 'rb').read() for name in before}
  assert after == before and not os.path.exists(os.path.join(workdir, 'config.1.json'))
  train.train_and_evaluate(config, workdir)  # The run is still usable as it was.
