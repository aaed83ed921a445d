r"""Input-pipeline throughput on this machine, next to the train steps it must feed.

Cases (images per second, host-local batches fully materialised as the train
loop receives them):

  cifar_crop_flip   CIFAR-10-LT-sized in-memory data (12,406 images 32x32x3),
                    RandomCrop(32, 4) + flip + normalise, batch 128.
  jpeg_rrc_224      a list-file folder of 375x500 JPEGs (ImageNet-sized), decode +
                    RandomResizedCrop(224) + flip + ColorJitter + normalise, batch 64:
                    all on the host (data.device_augment=False), the baseline of:
  jpeg_rrc_224_device_augment
                    the same batches with data.device_augment: the host decodes and
                    crops and sends uint8 crops and the flip/jitter draws; the train
                    step does the rest (ltjax.data.device_augment), measured apart as
                    device_augment/jit_b64_224 (on this CPU, which is then the device).
  records_jpeg_rrc_224, records_raw_rrc_224
                    the same list prepared by ``python -m ltjax.prepare`` (shorter side
                    256, ltjax.data.records) as re-encoded JPEGs or raw pixels, read
                    with data.device_augment.
  jpeg_rrc_224_dali_cpu
                    the JPEG files with data.decoder='dali' (when nvidia-dali is
                    installed): the host reads the files and draws the boxes,
                    DALI's CPU backend (all cores) decodes the crop windows and
                    resizes, in the training process (ltjax.data.dali_decode).

each at 0, 1 and 2 grain worker processes (0: one grain read thread in the
training process). The JPEG and records rows carry ``ratio`` to the full-size
host-only baseline ``jpeg_rrc_224`` of the same worker count in the same run,
``images_per_s_per_core`` (``cores``: a pipeline with w workers uses w cores,
with none one; DALI's threads all of them), and what that means for one H100 training ResNet-50 in bfloat16 at the
rate recorded in step_time_h100.json (5022 images/s, not measured here; the
CIFAR rows: ResNet-32, 19,680 images/s): ``h100_cores_needed`` at this rate
per core and ``h100_input_wait_fraction``, the share of step time spent
waiting for input if this pipeline fed it (1 - rate / step rate). Beside them, the train-step rate of ResNet-32 (batch 128,
32x32) and ResNet-50 (224x224, small batch, converted to images/s) on the same
CPU, measured in the same run, so the ratio pipeline/step says which bounds
training on this machine.

    python benchmarks/input_pipeline.py [--quick] [--no_resnet50]

Writes benchmarks/results/input_pipeline.json (convention: benchmarks/README.md).
"""

import argparse
import functools
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from ltjax import data  # pylint: disable=wrong-import-position
from ltjax import losses  # pylint: disable=wrong-import-position
from ltjax import models  # pylint: disable=wrong-import-position
from ltjax import optim  # pylint: disable=wrong-import-position
from ltjax import train  # pylint: disable=wrong-import-position
from ltjax.data import dali_decode  # pylint: disable=wrong-import-position
from ltjax.data import device_augment  # pylint: disable=wrong-import-position
from ltjax.data import listfile  # pylint: disable=wrong-import-position
from ltjax.data import records  # pylint: disable=wrong-import-position
from ltjax.train import sharding  # pylint: disable=wrong-import-position

# Train steps on one H100, images/s (step_time_h100.json: resnet50_bf16/jax, resnet32/jax).
H100_RESNET50_BF16 = 5022.0
H100_RESNET32 = 19680.0


def feeding(rate: float, cores: int, h100_step_rate: float) -> dict:
  """Per-core rate, and what it means for an H100 step of ``h100_step_rate`` images/s."""
  per_core = rate / cores
  return {
      'cores': cores,
      'images_per_s_per_core': per_core,
      'h100_cores_needed': h100_step_rate / per_core,
      'h100_input_wait_fraction': max(0.0, 1 - rate / h100_step_rate),
  }


def cifar_source() -> data.ArrayDataset:
  rng = np.random.default_rng(0)
  n = 12_406
  return data.ArrayDataset(
      images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
      labels=rng.integers(0, 10, n).astype(np.int32),
      num_classes=10,
      mean=(0.49, 0.48, 0.45),
      std=(0.2, 0.2, 0.2),
      class_names=tuple(map(str, range(10))),
  )


def jpeg_source(root: str, num_files: int = 64, num_lines: int = 4096):
  """A list-file folder of 375x500 JPEGs; list lines cycle over the files."""
  rng = np.random.default_rng(0)
  # Smooth random images compress like photos (noise would be unrealistically large).
  for i in range(num_files):
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(
        os.path.join(root, f'{i}.jpg'), quality=90
    )
  list_file = os.path.join(root, 'train.txt')
  with open(list_file, 'w') as f:
    for j in range(num_lines):
      f.write(f'{j % num_files}.jpg {j % 1000}\n')
  return listfile.ListFileSource(
      root, list_file, num_classes=1000, mean=listfile.IMAGENET_MEAN, std=listfile.IMAGENET_STD
  )


def prepared_records(source, root: str, image_format: str, workers: int):
  """``source`` prepared as records (shorter side 256) under ``root``, read back."""
  out = os.path.join(root, f'records_{image_format}')
  records.prepare_split(
      source,
      out,
      dataset='imagenet_lt',
      split='train',
      options=records.PrepareOptions(image_format=image_format, shorter_side=256),
      workers=workers,
  )
  return records.load_records_split(out, 'imagenet_lt', 'train')


def imagenet_batches(source, batch_size: int, size: int = 224, **kwargs) -> data.TrainBatches:
  """The ImageNet train transform's batches of ``source`` (seed 0)."""
  return data.TrainBatches(
      source,
      global_batch_size=batch_size,
      seed=0,
      augment='imagenet',
      image_size=size,
      **kwargs,
  )


def pipeline_rate(batches: data.TrainBatches, *, num_workers: int, num_batches: int, decode=None):
  """(images/s in steady state, seconds to the first batch).

  The first 2 + 2 * num_workers batches (start-up, and the workers' filled
  buffers of 2) are not timed.
  """
  warmup = 2 + 2 * num_workers
  t0 = time.perf_counter()
  it = batches.iterate(0, num_batches + warmup, num_threads=1, num_workers=num_workers)
  if decode is not None:  # As the training loop applies data.decoder='dali'.
    it = map(decode, it)
  next(it)
  first = time.perf_counter() - t0
  for _ in range(warmup - 1):  # Let the workers reach steady state.
    next(it)
  t1 = time.perf_counter()
  count = 0
  for batch in it:
    count += len(batch['label'])
  return count / (time.perf_counter() - t1), first


def device_augment_rate(source, repeats: int) -> float:
  """Images/s of the jitted device half of the transform on one batch of 64 (this CPU)."""
  batch = jax.device_put(imagenet_batches(source, 64, device_augment=True).batch(0))
  apply = jax.jit(lambda b: device_augment.apply(b, source.mean, source.std))
  jax.block_until_ready(apply(batch))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(apply(batch))
    times.append(time.perf_counter() - t0)
  return 64 / float(np.median(times))


def step_rate(model_name: str, batch: int, size: int, num_classes: int, repeats: int):
  """Images/s of the jitted train step (median of ``repeats``), and its compile time."""
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = models.build_model(
      ml_collections.ConfigDict({'name': model_name, 'head': 'linear'}), num_classes
  )
  tx = optim.torch_sgd(0.1, momentum=0.9, weight_decay=5e-4)
  state = train.create_train_state(model, tx, input_shape=(size, size, 3), seed=0, mesh=mesh)
  loss_fn = functools.partial(losses.softmax_cross_entropy, reduction='mean')
  step = train.make_train_step(state, mesh, objective=losses.simple_objective(loss_fn))
  rng = np.random.default_rng(0)
  global_batch = sharding.to_global(
      {
          'image': rng.normal(size=(batch, size, size, 3)).astype(np.float32),
          'label': rng.integers(0, num_classes, batch).astype(np.int32),
      },
      mesh,
  )
  t0 = time.perf_counter()
  state, metrics = step(state, global_batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, metrics = step(state, global_batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  return batch / float(np.median(times)), compile_s


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='fewer batches, no ResNet-50')
  parser.add_argument('--no_resnet50', action='store_true')
  parser.add_argument('--workers', default='0,1,2')
  parser.add_argument(
      '--wait_for_quiet',
      type=float,
      default=120.0,
      help='seconds to wait for the load average to drop below 0.5',
  )
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags.
  quiet = _common.wait_for_quiet(max_wait_s=args.wait_for_quiet)
  workers = [int(w) for w in args.workers.split(',')]
  n_cifar, n_jpeg = (20, 6) if args.quick else (60, 30)
  rows = []

  resnet32_rate, resnet32_compile = step_rate('resnet32', 128, 32, 10, 3 if args.quick else 8)
  rows.append(
      _common.emit(
          _common.record(
              'train_step/resnet32_b128',
              'throughput',
              resnet32_rate,
              'images/s',
              compile_s=resnet32_compile,
          )
      )
  )
  resnet50_rate = None
  if not (args.quick or args.no_resnet50):
    resnet50_rate, compile_s = step_rate('resnet50', 8, 224, 1000, 3)
    rows.append(
        _common.emit(
            _common.record(
                'train_step/resnet50_b8_224',
                'throughput',
                resnet50_rate,
                'images/s',
                compile_s=compile_s,
            )
        )
    )

  cifar = data.TrainBatches(cifar_source(), global_batch_size=128, seed=0, augment='crop_flip')
  for w in workers:
    rate, first = pipeline_rate(cifar, num_workers=w, num_batches=n_cifar)
    rows.append(
        _common.emit(
            _common.record(
                f'pipeline/cifar_crop_flip/workers={w}',
                'throughput',
                rate,
                'images/s',
                first_batch_s=first,
                reference='train_step/resnet32_b128',
                ratio=rate / resnet32_rate,
                **feeding(rate, max(w, 1), H100_RESNET32),
            )
        )
    )

  with tempfile.TemporaryDirectory() as root:
    source = jpeg_source(root)
    prepared = {}
    for image_format in ('jpeg', 'raw'):
      t0 = time.perf_counter()
      prepared[image_format] = prepared_records(source, root, image_format, workers=2)
      prepare_s = time.perf_counter() - t0
      rows.append(
          _common.emit(
              _common.record(
                  f'prepare/{image_format}_256',
                  'throughput',
                  len(source) / prepare_s,
                  'images/s',
                  workers=2,
                  bytes_per_image=prepared[image_format].meta['bytes'] / len(source),
              )
          )
      )
    cases = [
        ('jpeg_rrc_224', source, False, 'pillow'),
        ('jpeg_rrc_224_device_augment', source, True, 'pillow'),
        ('records_jpeg_rrc_224', prepared['jpeg'], True, 'pillow'),
        ('records_raw_rrc_224', prepared['raw'], True, 'pillow'),
    ]
    if dali_decode.available():  # DALI's CPU backend here; on a GPU host it decodes there.
      cases.append(('jpeg_rrc_224_dali_cpu', source, True, 'dali'))
    for w in workers:
      baseline = None
      for name, case_source, device_augment, decoder in cases:
        batches = imagenet_batches(case_source, 64, device_augment=device_augment, decoder=decoder)
        decode = None
        if decoder == 'dali':
          decode = dali_decode.DaliCropDecoder(224, 64, device='cpu', num_threads=os.cpu_count())
        rate, first = pipeline_rate(batches, num_workers=w, num_batches=n_jpeg, decode=decode)
        baseline = baseline or rate
        # A pipeline with w workers uses w cores, with none one; DALI's threads use them all.
        cores = os.cpu_count() if decoder == 'dali' else max(w, 1)
        extra = feeding(rate, cores, H100_RESNET50_BF16)
        if name != 'jpeg_rrc_224':  # Against the full-size host-only path of the same run.
          extra.update(reference=f'pipeline/jpeg_rrc_224/workers={w}', ratio=rate / baseline)
        elif resnet50_rate:
          extra.update(reference='train_step/resnet50_b8_224', ratio=rate / resnet50_rate)
        rows.append(
            _common.emit(
                _common.record(
                    f'pipeline/{name}/workers={w}',
                    'throughput',
                    rate,
                    'images/s',
                    first_batch_s=first,
                    **extra,
                )
            )
        )
    rate = device_augment_rate(source, repeats=3 if args.quick else 8)
    rows.append(
        _common.emit(_common.record('device_augment/jit_b64_224', 'throughput', rate, 'images/s'))
    )

  path = _common.write_results(
      os.path.join(_common.RESULTS_DIR, 'input_pipeline.json'), rows, quiet=quiet
  )
  _common.log(f'wrote {path}')


if __name__ == '__main__':
  main()
