"""Every configuration key of ltjax, with its default and meaning.

Recipe configs import this base and override values; they never add keys, so
with ``lock_config`` a misspelt override (``--config.optim.lrr=0.1``) fails
with the nearest valid key. This base alone is not a recipe.
"""

import ml_collections


def loss_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'cross_entropy'  # A key of ltjax.losses.LOSSES.
  c.label_smoothing = 0.0  # cross_entropy: PyTorch label smoothing.
  c.focal_gamma = 2.0  # focal, class_balanced 'focal' variant.
  c.cb_beta = 0.9999  # class_balanced: effective-number beta.
  c.cb_variant = 'softmax'  # class_balanced: softmax, sigmoid, focal, softmax_bce.
  # How class weights (class_balanced, DRW / ADRW, ...) reduce over the batch:
  # 'weight_sum': sum_i w_i l_i / sum_i w_i (PyTorch's CrossEntropyLoss(weight=));
  # 'batch': sum_i w_i l_i / B (Cui et al.'s CB_loss, as weight balancing and EWB run it;
  # / (B C) for cb_variant='sigmoid', as EWB's).
  c.weighted_reduction = 'weight_sum'
  c.ldam_max_margin = 0.5  # ldam: largest margin (0.3 on iNat).
  c.ldam_scale = 30.0  # ldam: s (use model.head='cosine').
  c.la_tau = 1.0  # logit_adjusted: tau.
  c.vs_gamma = 0.3  # vs: multiplicative exponent gamma.
  c.vs_tau = 1.0  # vs: additive tau.
  c.lort_delta = 0.98  # lort: retargeting delta.
  # A key of ltjax.losses.SCHEDULES (none, drw, adrw, tla, drw_tla, adrw_tla).
  c.schedule = 'none'
  c.switch_epoch = 160  # DRW / ADRW / TLA switch (0-indexed epoch, inclusive).
  c.drw_beta = 0.9999  # drw: effective-number beta after the switch.
  c.adrw_nu = 0.25  # adrw: alpha_c ~ pi_c^-nu after the switch.
  c.feature_norm_weight = 0.0  # FR: + weight * mean ||f||^2 / 2.
  c.lwr_weight = 0.0  # LWR: lambda0 of lambda(t) = lambda0 (1 - t/T)^2.
  c.lwr_theta = 0.4  # LWR cosine threshold.
  c.lwr_tau = 0.1  # LWR temperature.
  c.lwr_schedule = 'decay'  # 'decay': lambda0 (1 - t/T)^2 (LWR Eq. 6); 'constant': lambda0.
  # CC-SAM stage 2 (classifier re-training): adversarial features f + lambda w_c g/||g||.
  c.adversarial_weight = 0.0  # lambda (the official adver_reg = 1); 0: off.
  c.adversarial_cap = 1.0  # alpha = min((epoch + 1) / T, cap): 1.0 CIFAR-10, 0.3 CIFAR-100.
  c.adversarial_div = 2.0  # w_c = log(n_max / n_c + 0.01) / div.
  return c


def optim_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'sgd'  # PyTorch-equivalent SGD (ltjax.optim.torch_sgd).
  c.lr = 0.1
  c.momentum = 0.9
  c.nesterov = False
  c.weight_decay = 5e-4  # Coupled L2, as torch.optim.SGD.
  c.weight_decay_mask = '.*'  # Regex over parameter paths that decay ('.*': all, as PyTorch).
  return c


def schedule_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'cosine'  # 'constant', 'warmup_multistep' or 'cosine'.
  c.granularity = 'step'  # 'step' or 'epoch' (PyTorch epoch-stepped schedulers).
  c.epoch_offset = 0  # 1 reproduces scheduler.step() at the start of each epoch.
  c.warmup_epochs = 0.0
  c.warmup_start_factor = 0.0
  c.milestones = ()  # Epochs of the multistep decays.
  c.gamma = 0.1  # Multistep decay factor.
  return c


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Initialisation, data order and augmentation.
  config.dtype = 'float32'  # Compute dtype: 'float32' or 'bfloat16' (params stay float32).
  config.batch_size = 128  # Global batch size (all devices, all hosts).
  config.eval_batch_size = 1000  # Global evaluation batch size.
  config.num_epochs = 30  # Training length in epochs (epoch = N // batch_size steps).
  config.num_train_steps = -1  # If > 0, overrides num_epochs for the step count.
  # Regex of the parameter paths stage 1 trains ('': all); the rest is frozen (no update, no
  # decay). Stage 2 has its own, stage2.trainable.
  config.trainable = ''
  config.log_every_steps = 50  # Train rows of metrics.jsonl (mean over the interval).
  config.eval_every_epochs = 5  # Test evaluation (and checkpoint) interval; also at the end.
  config.checkpoint_every_steps = 0  # Extra checkpoints between evaluations (0: none).
  config.keep_checkpoints = 2  # Latest checkpoints kept (the best is kept separately).
  # Also save when this many minutes passed since the last save (0: off): bounds what an
  # unannounced kill costs. SIGTERM / SIGINT / a pod preemption always save (ltjax.train.stopping).
  config.checkpoint_every_minutes = 0.0
  # A tqdm bar when stdout is a terminal; otherwise (batch jobs) one line per log interval
  # with loss, images/s, input wait, device memory and ETA. False: neither.
  config.progress_bar = True
  # (first, last): a profiler trace of those steps, in <workdir>/profile (TensorBoard's
  # profile plugin reads it). (): no trace.
  config.profile_steps = ()

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'  # A key of ltjax.data.datasets.SOURCES.
  config.data.data_dir = ''  # IDX dir, TFDS data_dir or image root ('' = default places).
  config.data.tfds_name = ''  # With name='tfds': e.g. 'cifar100' or 'cifar10:3.0.2'.
  config.data.list_dir = ''  # List-file sources: split-file directory ('' = data_dir).
  # List-file data sets: records prepared by `python -m ltjax.prepare` ('' = read the image files).
  config.data.records_dir = ''
  config.data.skip_corrupt = False  # Replace unreadable images (logged) instead of failing.
  # Decode every evaluation image (reduced size, threaded) before training: a corrupt test
  # image fails before the first step, not at the first evaluation.
  config.data.verify_eval_images = True
  config.data.imbalance_ratio = (
      100.0  # n_max / n_min (> 1) of the long-tailed train split; 0 keeps the source.
  )
  config.data.n_max = 0  # Head-class count (0: the source's per-class count).
  config.data.profile = 'exp'  # 'exp' or 'step'.
  config.data.selection = 'shuffle'  # Kept samples: 'shuffle' (seeded) or 'first' (file order).
  config.data.subsample_seed = 0  # Seed of the per-class shuffle.
  config.data.val_per_class = 0  # Held out of training per class as a validation split.
  config.data.open_classes = ()  # Class ids held out as the open-set test split (OLTR); (): none.
  # OLTR's open-set list, evaluated beside the test split (labels -1): 'oltr' (the data set's
  # ImageNet_LT_open.txt / Places_LT_open.txt), a list path (relative: to list_dir), '': none.
  config.data.open_list = ''
  config.data.open_dir = ''  # Images of open_list ('': the folder named like it, beside it).
  config.data.sampler = 'instance'  # 'instance', 'class_aware' or 'square_root'.
  config.data.read_threads = 1  # grain read threads (1 on small CPUs; 0: in the main thread).
  config.data.num_workers = 0  # grain worker processes (for JPEG decoding).
  config.data.augment = 'none'  # A key of ltjax.data.pipeline.AUGMENTATIONS.
  config.data.crop_padding = 4  # Zero padding of the random crop.
  config.data.image_size = 224  # 'imagenet'/'inat': crop size (test: resize 256/224 of it).
  config.data.mixup_alpha = 0.0  # > 0: mixup with lambda ~ Beta(alpha, alpha) per batch.
  # 'imagenet'/'inat' without mixup: the host sends uint8 crops and the batch's flip and jitter
  # draws; flip, ColorJitter and normalisation run in the train step (ltjax.data.device_augment).
  config.data.device_augment = True
  # Who decodes list-file JPEGs: 'pillow' (input workers) or 'dali' (NVIDIA DALI, on the GPU when
  # JAX runs on one, else the CPU; needs device_augment and pip install ltjax[dali]).
  config.data.decoder = 'pillow'
  config.data.synthetic = ml_collections.ConfigDict()
  config.data.synthetic.num_classes = 10
  config.data.synthetic.per_class = 100
  config.data.synthetic.image_shape = (28, 28, 1)
  config.data.synthetic.seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'small_cnn'  # A key of ltjax.models.BACKBONES.
  config.model.head = 'linear'  # A key of ltjax.models.HEADS.
  config.model.head_scale = 1.0  # 'cosine': logits = scale * cos.
  config.model.head_tau = 1.0  # 'tau_norm': w_c / ||w_c||^tau.
  config.model.head_seed = 0  # 'etf': seed of the random orthonormal basis.
  # Initial classifier kernel of 'linear' heads: 'torch' (PyTorch's nn.Linear default) or
  # 'kaiming_normal' (LDAM-DRW's ResNet-32, whose _weights_init re-initialises the Linear).
  config.model.head_init = 'torch'
  config.model.lwr_projection_dim = 0  # 'lwr': output width of the projection MLP (0: d).
  config.model.bn_scale_init = 1.0  # Initial BN scale of the ResNets (EWB's fixed-BN analysis).
  # Channels of a ResNet's stem and first stage (doubling per stage); 0: the architecture's
  # own (64; 16 for the CIFAR ResNet-32). A narrow copy keeps depth, layout and parameter names:
  # quick runs and tests of the real architecture. Pretrained weights need the own width.
  config.model.width = 0
  # torchvision-format weights (.safetensors, or torch.save's .pth/.pt of a state_dict(); a
  # local path or anything etils.epath opens) that a fresh stage 1 of a ResNet backbone starts
  # from (ltjax.models.pretrained); '': none. Not re-applied on resumption or in stage 2.
  config.model.pretrained = ''
  # The classifier from the file's fc: 'auto' (loaded when its shape matches the head,
  # else the head stays fresh) or 'skip' (always fresh).
  config.model.pretrained_head = 'auto'

  config.loss = loss_config()
  config.optim = optim_config()
  config.schedule = schedule_config()

  # Sharpness-aware minimisation (Foret et al.) around the optimiser of stage 1.
  config.sam = ml_collections.ConfigDict()
  config.sam.rho = 0.0  # > 0: SAM with this radius (0: off).
  config.sam.rho_boundaries = ()  # Epochs where a piecewise-constant rho changes (Saddle).
  config.sam.rho_values = ()  # len(boundaries) + 1 values; overrides sam.rho when set.
  config.sam.adaptive = False  # ASAM: e = rho T^2 g / ||T g||, T = |theta|.
  config.sam.perturb = '.*'  # Regex of the perturbed parameter paths.
  # Which passes update BatchNorm's running statistics: 'clean_pass' (Google's Flax SAM) or
  # 'both_passes' (the clean, then the perturbed: the PyTorch ports, davda54's SAM in DDC/Saddle).
  config.sam.batch_norm_statistics = 'clean_pass'

  # Class-conditional SAM, stage 1 (Zhou et al., CVPR 2023): the linear head is
  # perturbed per class; total = (1 - flat_ratio) * clean + flat_ratio * flat.
  config.cc_sam = ml_collections.ConfigDict()
  config.cc_sam.flat_ratio = 0.0  # > 0 turns CC-SAM on (official: 0.3 CIFAR-10, 0.5 CIFAR-100).
  config.cc_sam.noise_ratio = 1e-6  # The official radius scale (both CIFAR configs).
  config.cc_sam.radius = 'official'  # 'official' (released code), 'paper' (Eq. 8-9) or 'fixed'.
  config.cc_sam.rho = 0.0  # |eps_c| for radius='fixed'.
  config.cc_sam.implementation = 'closed_form'  # 'closed_form' (B x B Gram) or 'vmap' (per class).
  # 'gradient': eps_c along the class gradient (the method); 'random': the radius's magnitude
  # along a Gaussian direction per class and step (CC-SAM Table 2, 'Stage 1 + mag').
  config.cc_sam.direction = 'gradient'

  # Stage 2: classifier re-training on the stage-1 model (cRT, LWS, tau-norm,
  # weight balancing's MaxNorm stage, CC-SAM's adversarial stage, LORT). It runs
  # in <workdir>/stage2 after stage 1 when num_epochs > 0.
  config.stage2 = ml_collections.ConfigDict()
  config.stage2.num_epochs = 0  # 0: single-stage training.
  config.stage2.init_from = 'best'  # Stage-1 checkpoint to start from: 'best' or 'latest'.
  config.stage2.head = 'keep'  # 'keep', 'reinit' (cRT) or a key of ltjax.models.HEADS
  # (parameters whose path and shape match are kept).
  config.stage2.trainable = (
      'head/.*'  # Regex of the parameter paths that train; the rest is frozen.
  )
  config.stage2.bn = 'update'  # 'update' (train-mode BN, as the official code) or 'frozen'.
  config.stage2.batch_size = 0  # 0: stage 1's.
  config.stage2.sampler = 'instance'  # A key of ltjax.data.samplers.SAMPLERS.
  config.stage2.augment = ''  # '': stage 1's data.augment.
  config.stage2.mixup_alpha = 0.0
  config.stage2.eval_every_epochs = 1
  config.stage2.max_norm = 0.0  # > 0: projected MaxNorm on head/kernel with this thresh.
  config.stage2.max_norm_per_epoch = False  # Project once per epoch (WB demo) not per step (paper).
  # 'auto': with only the head training, stage2.bn='frozen', stage2.augment='none' and no
  # mixup, extract the features once and train the head on them (exact, much faster);
  # 'on': the same, an error when those conditions fail; 'off': always run the backbone.
  config.stage2.feature_cache = 'auto'
  config.stage2.loss = loss_config()
  config.stage2.optim = optim_config()
  config.stage2.schedule = schedule_config()

  config.eval = ml_collections.ConfigDict()
  config.eval.flip_tta = False  # Average logits of x and hflip(x).
  config.eval.image_size = 0  # > 0: Resize(size * 256 / 224) + CenterCrop(size) at test.
  config.eval.many_threshold = 100  # many: n_c > this (training counts).
  config.eval.few_threshold = 20  # few: n_c < this.
  # Many / medium / few: 'threshold' (the two thresholds above, OLTR's shot_acc) or 'rank'
  # (classes sorted by training count, the first group_sizes[0] many, the next medium, the
  # rest few: Saddle's large-scale split).
  config.eval.groups = 'threshold'
  config.eval.group_sizes = ()  # 'rank': (many, medium) class counts.
  # With flip_tta: choose the best checkpoint on single-view accuracy while reporting the
  # flip-averaged one (the WB demo); False: both on the reported accuracy.
  config.eval.select_single_view = False

  # Post-hoc logit adjustment of the final model (ltjax.eval.posthoc): its value (gamma or tau)
  # is chosen on the validation split (data.val_per_class > 0) by balanced accuracy, then the
  # adjusted test table is printed and recorded beside the unadjusted one.
  config.posthoc = ml_collections.ConfigDict()
  # 'none', 'additive', 'multiplicative', 'normalized_multiplicative', 'tau_norm'.
  config.posthoc.method = 'none'
  config.posthoc.grid = ()  # Values searched ((): ltjax.eval.posthoc.DEFAULT_GRID, 0 to 2).
  return config
