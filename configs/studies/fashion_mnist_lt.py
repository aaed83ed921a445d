r"""Every method on Fashion-MNIST-LT: the five papers' methods, their baselines, two combinations.

    python launch/study.py --study=configs/studies/fashion_mnist_lt.py --workdir=runs/study_fmnist

One table, one row per method (the order below), mean +- std over seeds 0, 1
and 2 of the final model's test accuracy (the test set is balanced), overall
and on the many / medium / few groups (ltjax.study). The same command continues an interrupted
study; ``--dry_run`` lists the cells, ``--study.seeds=(0,)`` runs one seed.

Data (every method): the default data of configs/default.py -- Fashion-MNIST,
exponential profile, imbalance ratio 100, n_max 1000 (counts 1000, 599, 359,
215, 129, 77, 46, 27, 16, 10; many / medium / few = 5 / 3 / 2 classes), the
balanced 10k test set, crop (padding 2) + flip.

Budget and schedule (every method, ``study.common``): the small CNN, 30
epochs of batch 64, SGD momentum 0.9, cosine to 0 stepped per step, no
warm-up, base learning rate 0.05 and weight decay 5e-4 (configs/ce_default.py;
WB and EWB keep their own, below). Stage 2 of the two-stage methods: 5 epochs
(configs/default.py's), from stage 1's final checkpoint (not its best on
test: every number of the table is a final model, none is chosen on the test
split). Test evaluation every 10 epochs and at the end, no flip averaging. One
flag changes the backbone for every method: ``--study.common.model.name=resnet32``.

Scaling. Each method's hyperparameters are its paper's CIFAR setting, the
CIFAR-10 one where CIFAR-10 and CIFAR-100 differ (Fashion-MNIST has 10
classes). Epoch-based ones scale with the budget, 30 / 200 of the papers'
200-epoch schedules: DRW, ADRW, TLA and DDC's second SAM radius switch at the
0-indexed epoch 160 -> 24 (loss.switch_epoch; DDC's 400-epoch SAM runs switch
at 320 of 400, the same 4/5 of training), so the last 6 of 30 epochs are
re-weighted. LWR's lambda(t) decays over the run whatever its length. The
stage-2 lengths of the papers (WB 10, LORT 20, CC-SAM 30 epochs) all become 5;
their other stage-2 settings are the papers'.

Validation. Only the three methods that choose a value on validation data hold
it out: la_posthoc, tau_norm and ewb take 20 images per class (data.val_per_class = 20,
EWB's CIFAR split) out of the balanced training source before the long-tailed
subsampling, so their training counts equal every other method's; the best
checkpoint of those runs is chosen on that split too. No other method sees it.

Rows (name: paper, the CIFAR setting taken):
  ce                CE; the baseline of every paper.
  focal             Focal loss (Lin et al.), gamma 2 (its paper's default; as
                    configs/lwr_cifar_lt.py).
  cb_softmax        Class-balanced softmax CE (Cui et al.), effective-number beta 0.9999 (as
                    DRW and weight balancing use it).
  ce_drw            CE with DRW (Cao et al., LDAM-DRW): beta 0.9999 from epoch 160 of 200.
  ldam              LDAM (Cao et al.) alone: max margin 0.5, s 30, cosine classifier.
  ldam_drw          LDAM-DRW: the same with DRW from epoch 160 of 200.
  balanced_softmax  Balanced Softmax (Ren et al.): CE(z + log n_c).
  la_loss           Logit-adjusted loss (Menon et al.), tau 1.
  la_posthoc        Post-hoc logit adjustment (Menon et al.) of the CE model, tau chosen on
                    validation in 0, 0.05, ..., 2 (the LORT Table 1 row; EWB's additive LA).
  crt               cRT (Kang et al., Decoupling; LORT Table 1): the CE model's classifier
                    re-initialised and re-trained with class-aware sampling, CE, stage 1's
                    learning rate and weight decay.
  tau_norm          tau-normalisation (Kang et al.; LORT Table 1) of the CE classifier, no
                    training: w_c / |w_c|^tau with tau chosen on validation in 0, 0.05, ..., 2
                    (posthoc.method = 'tau_norm'), as Decoupling does.
  lws               LWS (Kang et al.; LORT Table 1): only the per-class scales of the CE
                    classifier train, class-aware sampling, stage 1's learning rate.
  mixup             Mixup (Zhang et al.) alpha 1 on CE (CC-SAM's stage-1 setting).
  sam               SAM (Foret et al.) on CE, rho 0.1: DDC's CE line and Saddle's CE setting
                    on CIFAR-10-LT IR 100.
  wb                Weight balancing (Alshammari et al.), two stages: CE with lr 0.01 and
                    weight decay 5e-3; then the classifier with the softmax-BCE class-balanced
                    loss (beta 0.9999), lr 0.01, weight decay 0.1, MaxNorm 0.1 per step, cosine
                    (configs/wb_cifar_lt.py).
  ewb               EWB (Hasegawa & Sato), one stage: WD 5e-3 (lr 0.01) on the backbone, FR
                    zeta 0.02 (CIFAR-10), the fixed simplex-ETF classifier, then the
                    multiplicative post-hoc LA with gamma chosen on validation
                    (configs/ewb_cifar_lt.py, variant wd_fr_etf).
  vs_tla_adrw       DDC (Wang et al.) VS + TLA + ADRW, CIFAR-10 exp IR 100 line of the
                    official script: gamma 0.05, tau 1, nu 0.15, from epoch 160 of 200.
  vs_tla_adrw_sam   The same with SAM, rho 0.1 before and 0.2 from the switch.
  lwr_bs            LWR (Ha et al.) + Balanced Softmax: lambda0 1 decaying as (1 - t/T)^2,
                    theta 0.4, temperature 0.1, the projection MLP (configs/lwr_cifar_lt.py).
  lort              LORT (Lu et al.): the CE model's classifier re-trained against the
                    retargeted target, delta 0.98, lr 5e-4, no weight decay, cosine,
                    instance sampling (configs/lort_cifar_lt.py; on a CE backbone as the
                    paper's Table 3).
  cc_sam            CC-SAM (Zhou et al.), two stages: configs/default.py as it is (flat ratio
                    0.3 and the official radius with mixup 1; class-aware adversarial stage 2).
  cc_sam_lort       New: LORT's stage 2 (as ``lort``) on CC-SAM's stage 1.
  cc_sam_lwr        New: LWR (lambda0 1, decaying, theta 0.4, temperature 0.1) added to
                    CC-SAM's stage 1, then CC-SAM's stage 2. CC-SAM perturbs a linear
                    classifier, so the repulsion acts on W itself, without LWR's projection
                    MLP (LWR Table 4 has that form only with a constant lambda).

Choices of this study, not of the papers:
  * WB and EWB keep their papers' optimiser (lr 0.01, weight decay 5e-3: the
    weight decay is the method and was tuned at that learning rate); every
    other method uses the base lr 0.05 and weight decay 5e-4, DDC's rows
    included (its scripted per-setting weight decay is not taken).
  * No method changes the augmentation (DDC's SAM runs use AutoAugment; here
    crop + flip as all) nor the subsampling (WB / EWB / LORT take the first n_c
    images per class; here the seeded shuffle as all).
  * Re-training keeps BatchNorm in train mode (as the official stage-2 codes
    of WB, LORT and CC-SAM) and stage 1's augmentation.
  * cRT, LWS and LORT share the CE stage 1 (the same keys), and
    cc_sam_lort CC-SAM's: ltjax.study.runner trains each such stage 1 once.

Wall time, measured: the whole study, 69 cells, took 52 min 54 s on 2 CPU
cores that other jobs shared for about half of it (the sum of its stages'
training times: 51.9 min); a CE cell takes about 0.9 min, a SAM cell 1.6 min,
a re-training cell that reuses a stage 1 seconds. The table it produced and
how it reads against the papers: README.md ("The first table") and
benchmarks/results/study_fashion_mnist_lt/.

The switch epochs (24) are absolute: a different ``--study.common.num_epochs``
needs DRW_SWITCH changed with it (4/5 of the epochs).
"""

import ml_collections

# The CE model of the study: every re-training row below starts from exactly this stage 1.
CE = 'configs/ce_default.py'
CC_SAM = 'configs/default.py'

DRW_SWITCH = 24  # 160 of 200 epochs -> 24 of 30 (0-indexed, inclusive).
STAGE2_EPOCHS = 5
VAL_PER_CLASS = 20  # EWB App. 7.5.1's CIFAR validation split, per class.

# LORT's re-training (configs/lort_cifar_lt.py), on any linear-head stage 1.
LORT_STAGE2 = {
    'num_epochs': STAGE2_EPOCHS,
    'head': 'keep',
    'trainable': 'head/.*',
    'sampler': 'instance',
    'mixup_alpha': 0.0,
    'max_norm': 0.0,
    'loss': {'name': 'lort', 'lort_delta': 0.98, 'adversarial_weight': 0.0},
    'optim': {'lr': 5e-4, 'weight_decay': 0.0},
    'schedule': {'name': 'cosine'},
}
# LWR's regulariser (configs/lwr_cifar_lt.py): lambda(t) = (1 - t/T)^2, theta 0.4, tau 0.1.
LWR = {'lwr_weight': 1.0, 'lwr_theta': 0.4, 'lwr_tau': 0.1, 'lwr_schedule': 'decay'}


def get_config():
  study = ml_collections.ConfigDict()
  study.seeds = (0, 1, 2)
  study.report = True
  study.common = {
      'model': {'name': 'small_cnn'},
      'data': {
          'name': 'fashion_mnist',
          'imbalance_ratio': 100.0,
          'n_max': 1000,
          'profile': 'exp',
          'augment': 'crop_flip',
          'crop_padding': 2,
      },
      'batch_size': 64,
      'num_epochs': 30,
      'optim': {'lr': 0.05, 'momentum': 0.9, 'weight_decay': 5e-4},
      'schedule': {
          'name': 'cosine',
          'granularity': 'step',
          'epoch_offset': 0,
          'warmup_epochs': 0.0,
      },
      'eval_every_epochs': 10,
      'eval': {'flip_tta': False},
      'progress_bar': False,
      'stage2': {'init_from': 'latest', 'eval_every_epochs': STAGE2_EPOCHS},
  }

  m = study.methods = ml_collections.ConfigDict(sort_keys=False)  # The table's row order.
  m.ce = {'recipe': CE, 'overrides': {'loss': {'name': 'cross_entropy'}}, 'label': 'CE'}
  m.focal = {
      'recipe': CE,
      'overrides': {'loss': {'name': 'focal', 'focal_gamma': 2.0}},
      'label': 'Focal',
  }
  m.cb_softmax = {
      'recipe': CE,
      'overrides': {'loss': {'name': 'class_balanced', 'cb_variant': 'softmax', 'cb_beta': 0.9999}},
      'label': 'CB (softmax)',
  }
  m.ce_drw = {
      'recipe': CE,
      'overrides': {
          'loss': {
              'name': 'cross_entropy',
              'schedule': 'drw',
              'switch_epoch': DRW_SWITCH,
              'drw_beta': 0.9999,
          }
      },
      'label': 'CE-DRW',
  }
  ldam = {'name': 'ldam', 'ldam_max_margin': 0.5, 'ldam_scale': 30.0}
  m.ldam = {
      'recipe': CE,
      'overrides': {'model': {'head': 'cosine'}, 'loss': ldam},
      'label': 'LDAM',
  }
  m.ldam_drw = {
      'recipe': CE,
      'overrides': {
          'model': {'head': 'cosine'},
          'loss': {**ldam, 'schedule': 'drw', 'switch_epoch': DRW_SWITCH, 'drw_beta': 0.9999},
      },
      'label': 'LDAM-DRW',
  }
  m.balanced_softmax = {
      'recipe': CE,
      'overrides': {'loss': {'name': 'balanced_softmax'}},
      'label': 'Balanced Softmax',
  }
  m.la_loss = {
      'recipe': CE,
      'overrides': {'loss': {'name': 'logit_adjusted', 'la_tau': 1.0}},
      'label': 'LA (loss)',
  }
  m.la_posthoc = {
      'recipe': CE,
      'overrides': {
          'data': {'val_per_class': VAL_PER_CLASS},
          'posthoc': {'method': 'additive'},
      },
      'label': 'LA (post-hoc, val)',
  }

  # Decoupled re-training of the CE model (stage 1 = the ce row's, key for key).
  m.crt = {
      'recipe': CE,
      'overrides': {
          'stage2': {
              'num_epochs': STAGE2_EPOCHS,
              'head': 'reinit',
              'trainable': 'head/.*',
              'sampler': 'class_aware',
              'optim': {'lr': 0.05, 'weight_decay': 5e-4},
              'schedule': {'name': 'cosine'},
          }
      },
      'label': 'cRT',
  }
  m.tau_norm = {
      'recipe': CE,
      'overrides': {
          'data': {'val_per_class': VAL_PER_CLASS},
          'posthoc': {'method': 'tau_norm'},
      },
      'label': 'tau-norm (val)',
  }
  m.lws = {
      'recipe': CE,
      'overrides': {
          'stage2': {
              'num_epochs': STAGE2_EPOCHS,
              'head': 'lws',
              'trainable': 'head/scale',
              'sampler': 'class_aware',
              'optim': {'lr': 0.05, 'weight_decay': 5e-4},
              'schedule': {'name': 'cosine'},
          }
      },
      'label': 'LWS',
  }

  m.mixup = {'recipe': CE, 'overrides': {'data': {'mixup_alpha': 1.0}}, 'label': 'Mixup'}
  m.sam = {'recipe': CE, 'overrides': {'sam': {'rho': 0.1}}, 'label': 'SAM'}
  m.wb = {
      'recipe': CE,
      'overrides': {
          'optim': {'lr': 0.01, 'weight_decay': 5e-3},
          'stage2': {
              'num_epochs': STAGE2_EPOCHS,
              'head': 'keep',
              'trainable': 'head/.*',
              'bn': 'update',
              'max_norm': 0.1,
              'loss': {
                  'name': 'class_balanced',
                  'cb_variant': 'softmax_bce',
                  'cb_beta': 0.9999,
                  'weighted_reduction': 'batch',  # WB's CB_loss: the weighted mean over B*C.
              },
              'optim': {'lr': 0.01, 'weight_decay': 0.1},
              'schedule': {'name': 'cosine'},
          },
      },
      'label': 'WB (two-stage)',
  }
  m.ewb = {
      'recipe': CE,
      'overrides': {
          'data': {'val_per_class': VAL_PER_CLASS},
          'model': {'head': 'etf'},
          'optim': {'lr': 0.01, 'weight_decay': 5e-3, 'weight_decay_mask': 'backbone/.*'},
          'loss': {'feature_norm_weight': 0.02},
          'posthoc': {'method': 'multiplicative'},
      },
      'label': 'EWB (one-stage, val)',
  }
  vs_tla_adrw = {
      'name': 'vs',
      'vs_gamma': 0.05,
      'vs_tau': 1.0,
      'schedule': 'adrw_tla',
      'switch_epoch': DRW_SWITCH,
      'adrw_nu': 0.15,
  }
  m.vs_tla_adrw = {'recipe': CE, 'overrides': {'loss': vs_tla_adrw}, 'label': 'VS+TLA+ADRW'}
  m.vs_tla_adrw_sam = {
      'recipe': CE,
      'overrides': {
          'loss': vs_tla_adrw,
          'sam': {'rho_boundaries': (DRW_SWITCH,), 'rho_values': (0.1, 0.2)},
      },
      'label': 'VS+TLA+ADRW+SAM',
  }
  m.lwr_bs = {
      'recipe': CE,
      'overrides': {
          'model': {'head': 'lwr', 'lwr_projection_dim': 0},
          'loss': {'name': 'balanced_softmax', **LWR},
      },
      'label': 'LWR+BS',
  }
  m.lort = {'recipe': CE, 'overrides': {'stage2': LORT_STAGE2}, 'label': 'LORT'}
  m.cc_sam = {'recipe': CC_SAM, 'overrides': {}, 'label': 'CC-SAM'}
  m.cc_sam_lort = {
      'recipe': CC_SAM,
      'overrides': {'stage2': LORT_STAGE2},
      'label': 'CC-SAM stage 1 + LORT',
  }
  m.cc_sam_lwr = {
      'recipe': CC_SAM,
      'overrides': {'loss': LWR},
      'label': 'CC-SAM + LWR (stage 1)',
  }
  return study
