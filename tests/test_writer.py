"""ltjax.train.writer: metrics.jsonl rows are unique by (split, step), also after a resume."""

import json

import pytest

from ltjax.train.writer import MetricWriter
from ltjax.train.writer import read_rows


def test_a_resume_drops_the_rows_after_its_step_and_a_rewrite_replaces(tmp_path):
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  for step in (5, 10, 15):
    writer.write(step=step, epoch=step / 5, split='train', loss=1.0 / step)
  writer.write(step=10, epoch=2.0, split='test', accuracy=0.5)
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 20, "sp')  # A killed process's torn last line.
  resumed = MetricWriter(str(tmp_path), tensorboard=False, resume_step=10)
  assert [(r['split'], r['step']) for r in read_rows(str(tmp_path / 'metrics.jsonl'))] == [
      ('train', 5),
      ('train', 10),
      ('test', 10),
  ]
  resumed.write(step=15, epoch=3.0, split='train', loss=0.2)
  resumed.write(step=10, epoch=2.0, split='test', accuracy=0.75)  # Evaluated again.
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [(r['split'], r['step']) for r in rows] == [
      ('train', 5),
      ('train', 10),
      ('train', 15),
      ('test', 10),
  ]
  assert rows[-1]['accuracy'] == 0.75


@pytest.mark.parametrize(
    'tail', [b'{"step": 20, "sp', b'\x00\x00\x00\x00', b'{"step": 20, "\xe2\x82']
)
def test_a_torn_last_line_is_dropped_with_a_warning_and_the_next_row_kept(tmp_path, caplog, tail):
  path = tmp_path / 'metrics.jsonl'
  writer = MetricWriter(str(tmp_path), tensorboard=False)
  for step in (5, 10):
    writer.write(step=step, epoch=step / 5, split='train', loss=1.0 / step)
  with open(path, 'ab') as f:
    f.write(tail)  # A kill in the middle of a write (or a power loss's zeros) at the end.
  resumed = MetricWriter(str(tmp_path), tensorboard=False, resume_step=10)
  assert f'{path}: dropped its last line' in caplog.text
  resumed.write(step=15, epoch=3.0, split='train', loss=0.2)
  assert [r['step'] for r in read_rows(str(path))] == [5, 10, 15]


@pytest.mark.parametrize(
    'line, problem',
    [
        (b'{"step": 7, "split": "train", "loss": \xff\xfe}', 'is not UTF-8 at byte 95 (line 2)'),
        (b'{"step": 7, "split": "train", "loss": 0.1,,}', 'line 2 is not JSON'),
        (b'[7, "train"]', 'line 2 is not a metrics row'),
    ],
)
def test_garbage_before_the_last_line_names_the_file_the_line_and_the_fix(tmp_path, line, problem):
  path = tmp_path / 'metrics.jsonl'
  rows = [{'step': s, 'epoch': 1.0, 'split': 'train', 'loss': 0.5} for s in (5, 10)]
  lines = [json.dumps(r).encode() for r in rows]
  path.write_bytes(b'\n'.join([lines[0], line, lines[1]]) + b'\n')
  for read in (
      lambda: read_rows(str(path)),
      lambda: MetricWriter(str(tmp_path), tensorboard=False, resume_step=10),
  ):
    with pytest.raises(ValueError) as error:
      read()
    message = str(error.value)
    assert message.startswith(f'{path} {problem}'), message
    assert 'Delete line 2' in message and 'restore the file from a copy' in message, message
