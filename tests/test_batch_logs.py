"""What a batch job's log and TensorBoard show: log lines, hyperparameters, a profile."""

import glob
import os
import re
import struct

from helpers import tiny_config
from ltjax import train
from ltjax.train import loop
from ltjax.train.writer import read_rows
from tensorboardX.proto import event_pb2


def read_events(path):
  """The Event protos of a TensorBoard event file (TFRecord framing)."""
  events = []
  with open(path, 'rb') as f:
    while header := f.read(8):
      (length,) = struct.unpack('Q', header)
      f.read(4)  # Header CRC.
      events.append(event_pb2.Event.FromString(f.read(length)))
      f.read(4)  # Data CRC.
  return events


def test_a_batch_job_gets_log_lines_hyperparameters_and_a_profile(tmp_path, capsys):
  config = tiny_config(progress_bar=True, profile_steps=(2, 3), **{'optim.lr': 0.037})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  # stdout is not a terminal here: no bar, one line per log interval (every 4 of 12 steps).
  out = capsys.readouterr().out
  lines = re.findall(
      r'^step (\d+)/12 \(epoch [\d.]+\): loss [\d.]+, \d+ images/s, '
      r'input wait \d+%, ETA \d+:\d\d:\d\d$',
      out,
      flags=re.M,
  )
  assert lines == ['4', '8', '12'], out
  assert '\r' not in out  # No tqdm redraws in a log file.
  rows = [r for r in read_rows(os.path.join(workdir, 'metrics.jsonl')) if r['split'] == 'train']
  assert all(0.0 <= r['input_wait_fraction'] <= 1.0 and r['steps_per_second'] > 0 for r in rows)

  (events_file,) = glob.glob(os.path.join(workdir, 'tensorboard', 'events.out.tfevents.*'))
  plugins = {}
  for event in read_events(events_file):
    for value in event.summary.value:
      plugins.setdefault(value.metadata.plugin_data.plugin_name, []).append(value)
  hparams = b''.join(v.metadata.plugin_data.content for v in plugins['hparams'])
  assert b'optim.lr' in hparams and b'model.name' in hparams

  traces = glob.glob(os.path.join(workdir, 'profile', 'plugins', 'profile', '*', '*.xplane.pb'))
  assert traces, os.listdir(workdir)


def test_the_log_line_eta_comes_from_the_measured_step_rate():
  row = {
      'loss': 1.5,
      'images_per_second': 640.0,
      'steps_per_second': 10.0,
      'input_wait_fraction': 0.25,
      'device_memory_gib': 3.5,
  }
  line = loop.log_line(100, 3700, 50, row)
  assert line == (
      'step 100/3700 (epoch 2.00): loss 1.5000, 640 images/s, input wait 25%, '
      'device memory 3.50 GiB, ETA 0:06:00'
  )
