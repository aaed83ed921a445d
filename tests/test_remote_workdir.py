"""A run whose workdir is in a bucket: everything lands there, nothing on the local disk.

``gs://`` is served offline by tests/fake_bucket.py (fsspec, TensorStore and the
Cloud Storage client replaced under ltjax, etils and orbax). The run trains,
is interrupted, resumes to the same end as an uninterrupted local run, and is
evaluated and compared -- all on ``gs://bucket/...``.
"""

import os

import chex
import jax
import numpy as np
import pytest

from configs import ce_places_lt
from fake_bucket import fake_bucket
from fake_bucket import local_files
from helpers import Interrupt
from helpers import interrupt_at
from helpers import tiny_config
from helpers import write_places_folder
from ltjax import files
from ltjax import train
from ltjax.eval import report as eval_report
from ltjax.train import workdir_lock
from ltjax.train import workdir_report
from ltjax.train.writer import read_rows


def test_train_resume_evaluate_compare_in_a_bucket(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'SETTLE_SECONDS', 0.0)  # One run at a time here.
  config = tiny_config(checkpoint_every_steps=4)
  full_state, full_results = train.train_and_evaluate(config, str(tmp_path / 'local'))

  cwd = tmp_path / 'cwd'
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # A relative local path would land here.
  root = str(tmp_path / 'bucket_store')
  with fake_bucket(root):
    run = 'gs://bucket/run'
    with pytest.raises(Interrupt):
      train.train_and_evaluate(config, run, hooks=[interrupt_at(6)])
    assert files.listdir(f'{run}/checkpoints') == ['4']
    state, results = train.train_and_evaluate(config, run)

    leaves = lambda s: jax.device_get((s.step, s.params, s.batch_stats, s.opt_state, s.rng))
    chex.assert_trees_all_equal(leaves(full_state), leaves(state))
    np.testing.assert_equal(results, full_results)
    rows = read_rows(f'{run}/metrics.jsonl')
    assert len({(r['split'], r['step']) for r in rows}) == len(rows)  # Resumed: no repeats.
    local_rows = read_rows(str(tmp_path / 'local' / 'metrics.jsonl'))
    assert [(r['split'], r['step']) for r in rows] == [(r['split'], r['step']) for r in local_rows]
    assert files.read_json(f'{run}/results.json')['final'] == 'stage1'

    report = workdir_report.report_for_workdir(run, sharpness_directions=0)
    written = eval_report.write_report(report, f'{run}/report', title='bucket')
    compared = eval_report.compare_reports({'a': report, 'b': report}, 'gs://bucket/compare')
    assert all(p.startswith('gs://bucket/') for p in written + compared)

  stored = local_files(root)
  for name in (
      'config.json',
      'metrics.jsonl',
      'results.json',
      'stage_results.json',
      'per_class_accuracy.png',
      'checkpoints/12/_CHECKPOINT_METADATA',
      'best/12/_CHECKPOINT_METADATA',
      'report/report.json',
      'report/matrices.npz',
      'report/per_class_accuracy.png',
  ):
    assert f'bucket/run/{name}' in stored, name
  assert any(f.startswith('bucket/run/tensorboard/events.out.tfevents') for f in stored)
  assert 'bucket/compare/comparison.json' in stored
  assert os.listdir(cwd) == []  # Nothing local: no 'gs:' folder, no relative file.
  assert sorted(os.listdir(tmp_path)) == ['bucket_store', 'cwd', 'local']


def test_list_file_data_in_a_bucket_with_a_corrupt_image_skipped_and_logged(tmp_path, monkeypatch):
  root = str(tmp_path / 'bucket_store')
  places = os.path.join(root, 'bucket', 'places')
  write_places_folder(places, 365, {'train': 1, 'val': 1, 'test': 1}, np.random.default_rng(0))
  with open(os.path.join(places, 'images/img_3.jpg'), 'r+b') as f:
    f.truncate(40)
  config = ce_places_lt.get_config()
  config.data.data_dir = 'gs://bucket/places'
  config.data.image_size = config.eval.image_size = 16
  config.model.name, config.dtype, config.progress_bar = 'small_cnn', 'float32', False
  config.data.num_workers = 0
  config.data.skip_corrupt = True
  config.batch_size, config.eval_batch_size, config.num_train_steps = 16, 128, 1
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(workdir_lock, 'SETTLE_SECONDS', 0.0)
  with fake_bucket(root):
    _, results = train.train_and_evaluate(config, 'gs://bucket/run')
    logs = [n for n in files.listdir('gs://bucket/run/skipped_images') if n.startswith('skipped-')]
    assert logs
    assert 'gs://bucket/places/images/img_3.jpg' in files.read_text(
        f'gs://bucket/run/skipped_images/{logs[0]}'
    )
  assert len(results['per_class_accuracy']) == 365
  assert sorted(os.listdir(tmp_path)) == ['bucket_store']


def test_a_damaged_checkpoint_in_a_bucket_is_moved_aside_and_saved_again(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, 'SETTLE_SECONDS', 0.0)
  config = tiny_config(num_train_steps=8, checkpoint_every_steps=4)
  root = str(tmp_path / 'bucket_store')
  with fake_bucket(root):
    run = 'gs://bucket/run'
    train.train_and_evaluate(config, run)
    step8 = os.path.join(root, 'bucket', 'run', 'checkpoints', '8')
    for d, _, names in os.walk(step8):  # Truncated data files: an interrupted copy.
      for name in names:
        path = os.path.join(d, name)
        if os.path.getsize(path) > 16 and 'METADATA' not in name:
          with open(path, 'r+b') as f:
            f.truncate(8)
    trained = []
    train.train_and_evaluate(config, run, hooks=[lambda step, state: trained.append(step)])
    assert trained == [5, 6, 7, 8]
    (moved,) = files.listdir(f'{run}/damaged')
    assert moved.startswith('8-') and files.exists(f'{run}/damaged/{moved}/_CHECKPOINT_METADATA')
    assert files.listdir(f'{run}/checkpoints') == ['4', '8']
    trained.clear()
    train.train_and_evaluate(config, run, hooks=[lambda step, state: trained.append(step)])
    assert trained == []  # Step 8 is readable again: nothing is retrained.
