r"""End to end on an accelerator: does the large-scale input path keep the train step busy?

One prepared run for a lent GPU (issue: "feed the accelerator"), under 8 minutes on one H100
with 16 cores. It makes its own data -- 375x500 JPEGs (ImageNet-sized) in an ImageNet-LT list
folder, then ``ltjax.prepare``'s records of them -- and measures, in one process:

  step/synthetic        the ResNet-50 bfloat16 train step (batch 256, 224 px, device_augment's
                        uint8 input) on one batch held on the device: the rate to feed.
  e2e/<path>            the same step fed by the real pipeline (grain workers, the host-to-
                        device copy, the train loop's device prefetch), for the JPEG files
                        (Pillow), raw and JPEG records (Pillow) and the files with DALI
                        decoding on the GPU; ``ratio`` = e2e images/s / step/synthetic
                        (target >= 0.9).
  dali/gpu_decode       DALI's decode + crop + resize alone (nvJPEG), batch 256.

    python benchmarks/device_input.py                # on a GPU host
    python benchmarks/device_input.py --smoke        # CPU, tiny sizes: checks that it runs

Writes benchmarks/results/device_input_<device kind>.json (convention: benchmarks/README.md).
The ResNet-50 step against PyTorch is step_time.py's GPU command, run in the same session.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
import input_pipeline  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position

from ltjax import losses  # pylint: disable=wrong-import-position
from ltjax import models  # pylint: disable=wrong-import-position
from ltjax import optim  # pylint: disable=wrong-import-position
from ltjax import train  # pylint: disable=wrong-import-position
from ltjax.data import dali_decode  # pylint: disable=wrong-import-position
from ltjax.train import sharding  # pylint: disable=wrong-import-position


def build_step(model_name: str, size: int, batch: int, dtype, mean, std):
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.build_model(
      ml_collections.ConfigDict({'name': model_name, 'head': 'linear'}), 1000, dtype=dtype
  )
  tx = optim.torch_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  state = train.create_train_state(model, tx, input_shape=(size, size, 3), seed=0, mesh=mesh)
  objective = losses.simple_objective(
      lambda logits, labels: losses.softmax_cross_entropy(logits, labels, reduction='mean')
  )
  step = train.make_train_step(state, mesh, objective=objective, input_stats=(mean, std))
  return state, step, mesh


def run_steps(state, step, batches, num_steps: int, warmup: int):
  """(images/s over the timed steps, state); every step's metrics are waited for."""
  count, t0 = 0, None
  for i, batch in enumerate(batches):
    state, metrics = step(state, batch)
    if i + 1 == warmup:
      jax.block_until_ready(metrics)
      t0 = time.perf_counter()
    elif i + 1 > warmup:
      count += int(batch['label'].shape[0])
    if i + 1 == warmup + num_steps:
      break
  jax.block_until_ready(metrics)
  return count / (time.perf_counter() - t0), state


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--smoke', action='store_true', help='CPU, tiny sizes, not written')
  parser.add_argument('--workers', type=int, default=max(1, (os.cpu_count() or 2) - 2))
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags.
  if args.smoke:
    model_name, size, batch, dtype, steps, warmup, files, lines = (
        'small_cnn',
        64,
        16,
        jnp.float32,
        4,
        2,
        8,
        256,
    )
  else:
    model_name, size, batch, dtype, steps, warmup, files, lines = (
        'resnet50',
        224,
        256,
        jnp.bfloat16,
        40,
        8,
        256,
        8192,
    )
  rows = []
  with tempfile.TemporaryDirectory() as root:
    source = input_pipeline.jpeg_source(root, num_files=files, num_lines=lines)
    t0 = time.perf_counter()
    prepared = {
        image_format: input_pipeline.prepared_records(
            source, root, image_format, workers=os.cpu_count() or 1
        )
        for image_format in ('raw', 'jpeg')
    }
    _common.log(f'data made in {time.perf_counter() - t0:.1f} s')

    state, step, mesh = build_step(model_name, size, batch, dtype, source.mean, source.std)
    host = input_pipeline.imagenet_batches(source, batch, size, device_augment=True).batch(0)
    fixed = sharding.to_global(host, mesh)
    synthetic, state = run_steps(state, step, iter(lambda: fixed, None), steps, warmup)
    rows.append(_common.emit(_common.record('step/synthetic', 'throughput', synthetic, 'images/s')))

    cases = [
        ('jpeg_files_pillow', source, 'pillow'),
        ('records_raw_pillow', prepared['raw'], 'pillow'),
        ('records_jpeg_pillow', prepared['jpeg'], 'pillow'),
    ]
    if dali_decode.available():
      cases.append(('jpeg_files_dali', source, 'dali'))
    for name, case_source, decoder in cases:
      batches = input_pipeline.imagenet_batches(
          case_source, batch, size, device_augment=True, decoder=decoder
      )
      local = batches.iterate(0, steps + warmup, num_threads=1, num_workers=args.workers)
      if decoder == 'dali':
        decode = dali_decode.DaliCropDecoder(size, batch)
        local = map(decode, local)
      rate, state = run_steps(state, step, sharding.prefetch_to_device(local, mesh), steps, warmup)
      rows.append(
          _common.emit(
              _common.record(
                  f'e2e/{name}',
                  'throughput',
                  rate,
                  'images/s',
                  workers=args.workers,
                  reference='step/synthetic',
                  ratio=rate / synthetic,
              )
          )
      )

    if dali_decode.available():
      decode = dali_decode.DaliCropDecoder(size, batch)
      batches = input_pipeline.imagenet_batches(
          source, batch, size, device_augment=True, decoder='dali'
      )
      hosts = [batches.batch(s) for s in range(3)]
      decode(hosts[0])
      t0 = time.perf_counter()
      for h in hosts:
        decode(h)
      rate = 3 * batch / (time.perf_counter() - t0)
      rows.append(
          _common.emit(
              _common.record(f'dali/{decode.device}_decode', 'throughput', rate, 'images/s')
          )
      )

  if not args.smoke:
    kind = jax.devices()[0].device_kind.lower().replace(' ', '_')
    path = _common.write_results(
        os.path.join(_common.RESULTS_DIR, f'device_input_{kind}.json'), rows
    )
    _common.log(f'wrote {path}')


if __name__ == '__main__':
  main()
