"""JPEG decode + RandomResizedCrop with NVIDIA DALI (``config.data.decoder = 'dali'``).

With Pillow (the default) the input workers decode every JPEG at full size on
the host's cores. With DALI the host only reads the encoded bytes and draws
the crop boxes; DALI decodes just the crop window (ROI decoding: nvJPEG on a
GPU, libjpeg-turbo on the CPU) and resizes it, so the host's cores are free.

Semantics: the host (``pipeline.TrainBatches``) reads each image's size from
its JPEG header and draws the RandomResizedCrop box with
``augment.random_resized_crop_params`` from the batch's generator, in the same
order as the Pillow path, then the flip and ColorJitter draws
(``data.device_augment``, which DALI needs). So the boxes, flips and jitter
of step s are exactly those of the Pillow path and still a function of
(seed, s); only the decoder and the resampling filter differ (DALI's
antialiased linear resize against Pillow's bilinear: about a quarter of a
grey level on average, a few at most, measured in the tests). Like Pillow's
decode, EXIF orientation is ignored.

``DaliCropDecoder(batch)`` turns the host batch's ENCODED + CROP into IMAGE,
uint8 (B, size, size, 3), leaving every other key as it is. It runs in the
training process after grain (a DALI pipeline cannot be pickled into grain's
workers), on the first local GPU when JAX runs on GPUs (``device='mixed'``:
nvJPEG) and on the CPU otherwise. The crops return to host memory and are
placed like any batch (4x fewer bytes than float32).

DALI is an optional dependency: ``pip install ltjax[dali]`` (the CUDA 12 wheel,
which also runs on the CPU without a GPU).
"""

import os

import jax
import numpy as np

from ltjax.data.batch_keys import CROP
from ltjax.data.batch_keys import ENCODED
from ltjax.data.batch_keys import IMAGE

_INSTALL = (
    "config.data.decoder='dali' needs NVIDIA DALI: `pip install ltjax[dali]` "
    "(or pip install nvidia-dali-cuda120); or set config.data.decoder='pillow'."
)


def _dali():
  try:
    import nvidia.dali as dali  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(_INSTALL) from e
  return dali


def available() -> bool:
  try:
    _dali()
    return True
  except ImportError:
    return False


class DaliCropDecoder:
  """Decodes and crops a host batch's JPEGs with DALI (module docstring).

  Attributes:
    size: the output side (``data.image_size``).
    batch_size: the host-local batch size (every batch has it).
    device: 'gpu' (decode with nvJPEG on the first local GPU) or 'cpu'; by
      default 'gpu' when JAX runs on GPUs, else 'cpu'.
  """

  def __init__(
      self,
      size: int,
      batch_size: int,
      *,
      device: str | None = None,
      num_threads: int | None = None,
  ):
    if device is None:
      device = 'gpu' if jax.default_backend() == 'gpu' else 'cpu'
    if device not in ('cpu', 'gpu'):
      raise ValueError(f"DALI device must be 'cpu' or 'gpu', not {device!r}.")
    self.size = int(size)
    self.batch_size = int(batch_size)
    self.device = device
    self.num_threads = num_threads or max(1, os.cpu_count() or 1)
    self._pipeline = None

  def _build(self):
    dali = _dali()
    fn, types = dali.fn, dali.types

    @dali.pipeline_def(
        batch_size=self.batch_size,
        num_threads=self.num_threads,
        device_id=0 if self.device == 'gpu' else None,
        exec_pipelined=False,  # One batch fed, one decoded: the host batch order is the step's.
        exec_async=False,
    )
    def crop_pipeline():
      encoded = fn.external_source(name='encoded', dtype=types.UINT8)
      anchor = fn.external_source(name='anchor', dtype=types.FLOAT)
      shape = fn.external_source(name='shape', dtype=types.FLOAT)
      images = fn.decoders.image_slice(
          encoded,
          anchor,
          shape,
          device='mixed' if self.device == 'gpu' else 'cpu',
          output_type=types.RGB,
          normalized_anchor=False,
          normalized_shape=False,
          axis_names='WH',
          adjust_orientation=False,  # As Pillow's decode.
      )
      return fn.resize(
          images,
          resize_x=self.size,
          resize_y=self.size,
          interp_type=types.INTERP_LINEAR,
          antialias=True,
      )

    pipeline = crop_pipeline()
    pipeline.build()
    return pipeline

  def __call__(self, batch: dict) -> dict:
    """The batch with IMAGE (uint8 crops) in place of ENCODED and CROP."""
    if ENCODED not in batch:
      return batch
    encoded, crop = batch[ENCODED], np.asarray(batch[CROP])
    if len(encoded) != self.batch_size:
      raise ValueError(f'A batch of {len(encoded)} images for a decoder of {self.batch_size}.')
    if self._pipeline is None:
      self._pipeline = self._build()
    # CROP rows are (top, left, height, width); DALI takes (x, y) anchors and (w, h) shapes.
    anchors = [np.asarray([c[1], c[0]], np.float32) for c in crop]
    shapes = [np.asarray([c[3], c[2]], np.float32) for c in crop]
    self._pipeline.feed_input('encoded', [np.frombuffer(e, np.uint8) for e in encoded])
    self._pipeline.feed_input('anchor', anchors)
    self._pipeline.feed_input('shape', shapes)
    (images,) = self._pipeline.run()
    if self.device == 'gpu':
      images = images.as_cpu()
    out = {k: v for k, v in batch.items() if k not in (ENCODED, CROP)}
    out[IMAGE] = np.ascontiguousarray(images.as_array())
    return out
