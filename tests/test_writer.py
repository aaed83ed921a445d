"""ltjax.train.writer: metrics.jsonl rows are unique by (split, step), also after a resume."""

import json

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
