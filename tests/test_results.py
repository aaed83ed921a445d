"""ltjax.train.results: the record a finished run leaves (results.json)."""

import json
import os

import numpy as np
import pytest

from ltjax.train import results


def test_stage_records_join_into_results_json_with_the_final_stage(tmp_path):
  rows = [
      {'split': 'train', 'images_per_second': 10.0},  # The first row includes compilation.
      {'split': 'test', 'accuracy': 0.5},
      {'split': 'train', 'images_per_second': 300.0},
      {'split': 'train', 'images_per_second': 100.0},
      {'split': 'train', 'images_per_second': 200.0},
  ]
  stage1, stage2 = str(tmp_path), str(tmp_path / 'stage2')
  os.makedirs(stage2)
  with open(os.path.join(stage1, 'metrics.jsonl'), 'w') as f:
    f.write(''.join(json.dumps(r) + '\n' for r in rows))
  assert results.median_throughput(stage1) == 200.0
  assert results.median_throughput(stage2) is None
  test = {
      'accuracy': 0.5,
      'balanced_accuracy': 0.5,
      'many': 0.75,
      'medium': 0.5,
      'few': float('nan'),
      'per_class_accuracy': np.array([0.75, 0.25]),
      'extra': 1,
  }
  adjusted = {**test, 'accuracy': 0.6}
  for name, workdir, posthoc in (
      ('stage1', stage1, None),
      (
          'stage2',
          stage2,
          {'method': 'logit_adjust', 'value': 1.5, 'metrics': adjusted, 'curve': []},
      ),
  ):
    record = results.stage_record(
        stage=name,
        step=7,
        test=test,
        posthoc=posthoc,
        train_counts=np.array([3, 1]),
        wall_seconds=2.5,
        wall_seconds_complete=True,
        resumed=False,
        workdir=workdir,
    )
    results.write_json(os.path.join(workdir, results.STAGE_FILENAME), record)
  run = results.write_run(stage1, {'stage1': stage1, 'stage2': stage2})
  assert run == results.read_run(stage1)
  assert sorted(os.listdir(stage1)) == [
      'metrics.jsonl',
      'results.json',
      'stage2',
      'stage_results.json',
  ]
  assert run['final'] == 'stage2'
  s1 = run['stages']['stage1']
  assert s1['test']['few'] is None and 'extra' not in s1['test']  # NaN has no JSON form.
  assert s1['test']['per_class_accuracy'] == [0.75, 0.25] and s1['images_per_second'] == 200.0
  assert results.final_metrics(run)['accuracy'] == 0.6
  assert results.final_metrics(run, posthoc=False)['accuracy'] == 0.5
  assert run['stages']['stage2']['posthoc']['value'] == 1.5


def test_damaged_records_name_the_file_what_is_wrong_and_the_fix(tmp_path):
  stage_results = tmp_path / results.STAGE_FILENAME
  stage_results.write_bytes(b'{"stage": "stage1", "step": 7,\n "test": {"accuracy": 0.5')  # Cut.
  with pytest.raises(ValueError) as error:
    results.write_run(str(tmp_path), {'stage1': str(tmp_path)})
  message = str(error.value)
  assert message.startswith(f'{stage_results} is not JSON'), message
  assert 'line 2' in message and 'Rerun the training command' in message, message
  run = tmp_path / results.FILENAME
  run.write_bytes(b'{"final": "stage1", "stages": {"\xff": 1}}')
  with pytest.raises(ValueError, match=rf'^{run} is not UTF-8 at byte 32 \(line 1\)'):
    results.read_run(str(tmp_path))
  with pytest.raises(ValueError, match=rf'^{run} is not UTF-8 .*Rerun the training command'):
    results.read_json(str(run))
  (tmp_path / 'metrics.jsonl').write_bytes(b'{"step": 1, "split": "train"}\n\xff\n{"step": 2}\n')
  with pytest.raises(ValueError, match=r'metrics.jsonl is not UTF-8 at byte 30 \(line 2\)'):
    results.median_throughput(str(tmp_path))
