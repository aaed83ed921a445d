"""The keys of a batch dictionary, defined once.

A batch is a ``dict[str, array]`` of arrays sharing the leading (batch)
axis B: host-local numpy arrays out of the input pipeline, or global
``jax.Array``s sharded on that axis after ``ltjax.train.sharding.to_global``
(which joins every key's per-process slices and does not look at the keys).
Producers and consumers refer to the keys by these constants:

  key           shape, dtype       produced by                consumed by
  IMAGE         (B, H, W, C)       pipeline.TrainBatches      steps.train_step
                float32,           .batch (augmented);        (backbone input);
                normalised         pipeline.eval_batches      steps.eval_step and
                                   (resize + centre crop      feature_cache's feature
                                   when asked)                step (predict steps run
                                                              by predict.predict)
  LABEL         (B,) int32         TrainBatches.batch,        train_step (loss,
                                   eval_batches,              accuracy);
                                   feature_cache (from the    predict.predict and
                                   extracted training labels) predict.evaluate
  MIXUP_LABEL   (B,) int32         TrainBatches.batch, only   train_step: the mixup
                                   with mixup_alpha > 0       partner's label
                                   (label[perm])
  MIXUP_LAMBDA  (B,) float32       TrainBatches.batch, with   train_step (its mean:
                                   MIXUP_LABEL (one lambda,   the weight of LABEL's
                                   repeated per example)      loss)
  MASK          (B,) bool          eval_batches,              predict.predict: drops
                                   predict.array_batches      those rows
                                   (False on padded rows)
  FEATURES      (B, D) float       feature_cache              train_step: replaces
                (the backbone's    .train_batches (cached     IMAGE, skipping the
                output dtype)      backbone features) and     backbone; the cache's
                                   .eval_batches              head step
  INDEX         (B,) int32         feature_cache              feature_cache: the
                                   .train_batches (sample     on-device gather of
                                   indices of a step)         FEATURES

  FLIP          (B,) bool          TrainBatches.batch with    steps.train_step, through
  JITTER_OPS    (B, n) int32       device_augment (the        data.device_augment.apply
  JITTER_FACTORS (B, n) float32    large-scale transforms):   (then IMAGE, uint8 until
                                   the flip and ColorJitter   then, is normalised
                                   draws of the batch         float32)

  ENCODED       B encoded files    TrainBatches.batch with    data.dali_decode (in the
                (uint8 arrays of   data.decoder='dali'        training process, before
                their bytes)                                  the batch goes to the
  CROP          (B, 4) int32       ... and the crop boxes     devices): replaced by
                                   (top, left, height, width) IMAGE, uint8 crops

Module names are those of ``ltjax.data`` (pipeline) and ``ltjax.train``
(steps, predict, feature_cache). A training batch carries IMAGE and LABEL (plus
MIXUP_LABEL and MIXUP_LAMBDA with mixup), or FEATURES and LABEL in cached
classifier re-training; an evaluation batch carries IMAGE, LABEL and MASK.
B is the host-local batch out of the pipeline and the global batch on device.
feature_cache's cached evaluation batches carry FLIPPED, the features of the
mirrored images for ``eval.flip_tta``, besides FEATURES, LABEL and MASK.

Records of a data source (``source[i]``, see ``ltjax.data.datasets``) use
the same two names 'image' and 'label' for one example, but are a separate
protocol: (H, W, C) uint8 and a Python int.
"""

IMAGE = 'image'
LABEL = 'label'
MIXUP_LABEL = 'mixup_label'
MIXUP_LAMBDA = 'mixup_lambda'
MASK = 'mask'
FEATURES = 'features'
INDEX = 'index'
# The random draws of the device-side large-scale transform (ltjax.data.device_augment).
FLIP = 'flip'
JITTER_OPS = 'jitter_ops'
JITTER_FACTORS = 'jitter_factors'
# JPEG files and their RandomResizedCrop boxes, decoded by DALI (ltjax.data.dali_decode).
ENCODED = 'encoded'
CROP = 'crop'
# Features of the mirrored images (eval.flip_tta) in the feature cache's evaluation batches.
FLIPPED = 'flipped'
