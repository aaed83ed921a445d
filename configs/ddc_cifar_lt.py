r"""DDC (Wang et al., NeurIPS 2023) on CIFAR-10/100-LT: every row of Table 1, baselines included.

Paper: "A Unified Generalization Analysis of Re-Weighting and Logit-Adjustment
for Imbalanced Learning", Table 1 (balanced accuracy, mean of 5 seeds), rows
CE+ADRW, LDAM+ADRW, VS+TLA+DRW, VS+TLA+ADRW and the baselines CE, LDAM, VS,
CE+DRW, LDAM+DRW, VS+DRW, "w/o SAM" and "w/ SAM". Losses and
schedules: docs/references.md, 'DDC: losses and schedules', 'LDAM-DRW' and
'Saddle-LongTail and SAM'; RandAug: 'AutoAugment and Cutout'.

Common recipe (official code wang22ti/DDC, cifar_train_sam.py and
utils/utils.py, on LDAM-DRW's): ResNet-32 ([5, 5, 5]; its Linear classifier
re-initialised Kaiming-normal as models/resnet_cifar.py does; LDAM's cosine
head for LDAM), batch 128, SGD lr 0.1, momentum 0.9, seeded per-class shuffle
of the LT subsample, evaluated every epoch, best-on-test. With E = 200 * f epochs, e = epoch + 1: lr * e / 5
while e <= 5 f, x1e-2 after e > 160 f, x1e-4 after e > 180 f; re-weighting, TLA
and the second SAM radius from the 0-indexed epoch 160 f (loss.switch_epoch).

  sam=false  f = 1: 200 epochs, weight decay 2e-4, crop + flip, no SAM: the
             "standard setting" of the README's tables (the paper's Table 1
             follows LDAM-DRW's protocol and defers the per-row values to its
             Appendix F, which is not available here).
  sam=true   f = 2: the official bash_script.sh, "400 epochs with tuned wd,
             SAM and RandAug": SAM on every parameter (rho before / from the
             switch), AutoAugment CIFAR10Policy + Cutout(16) ('autoaugment'),
             and the per-setting weight decay of the scripted line.

Per-setting values (bash_script.sh, 400 epochs + SAM + RandAug; rho is
rho before / from epoch 320; the ADRW-T line resumes from the VS line's
epoch-320 checkpoint, "stage A"):

  dataset  profile IR  | CE       | LDAM+DRW  | VS (stage A)         | VS ADRW-T (stage B)
                       | rho  wd  | rho  wd   | gam  tau  rho  wd    | nu   tau  rho      wd
  cifar100 exp   100   | .2  1e-4 | .5  1e-4  | .05  1.0  .3   2e-4  | .25  .75  .2/.4   5e-4
  cifar100 exp    10   | .1  1e-4 | .3  5e-5  | .05  0.5  .1   1e-4  | .1   .75  .1/.5   1e-4
  cifar100 step  100   | .3  1e-5 | .3  5e-5  | 0    1.0  .2   1e-4  | .1   1.0  .2/.2   4e-4
  cifar100 step   10   | .1  1e-5 | .4  5e-5  | 0    1.0  .1   1e-4  | .05  1.0  .1/.3   3e-4
  cifar10  exp   100   | .1  1e-4 | .4  5e-5  | .05  1.0  .1   2e-4  | .15  1.0  .1/.2   2e-4
  cifar10  exp    10   | .1  1e-4 | .4  1e-5  | 0    1.0  .1   1e-4  | .1   1.0  .1/.1   1e-4
  cifar10  step  100   | .1  5e-5 | .2  5e-5  | 0    1.25 .1   1e-4  | .1   1.0  .1/.2   5e-5
  cifar10  step   10   | .1  5e-5 | .2  5e-5  | 0    1.0  .1   1e-4  | .1   1.0  .1/.1   1e-4

How the methods take them (both sam values take nu, gamma and tau from here):
  vs_tla_adrw  one 400-epoch run standing for stage A + stage B: VS with stage
               A's gamma (TLA sets it to 0 from epoch 320), stage B's tau and
               nu, rho = (stage A's rho, stage B's second rho), and stage A's
               weight decay -- the resumed run restores the optimiser's param
               groups (weight decay included) from the checkpoint, so the --wd
               of the ADRW-T line never takes effect.
  vs_tla_drw   the same with DRW (effective-number beta 0.9999) in place of
               ADRW: not scripted, not in the paper's "w/ SAM" rows.
  ce_adrw      the CE line's rho and weight decay; ADRW from epoch 160 f.
  ldam_adrw    the LDAM+DRW line's rho and weight decay (max margin 0.5, s 30),
               ADRW in place of DRW.
  ce, ldam_drw, vs  the baselines the script runs (its CE, LDAM+DRW and VS
               lines: the VS rows take stage A's tau).
  ldam, ce_drw, vs_drw  the other Table 1 baselines: the CE, LDAM+DRW or VS
               line of the setting, without / with DRW.
  nu of CE/LDAM+ADRW, everything the script does not run, and gamma, tau and
  nu with sam=false, are not published: they are borrowed from the same
  setting's lines (an assumption; each is marked so by
  python -m ltjax.configs configs/ddc_cifar_lt.py:method=...).

Not expressible yet (no config key):
  * the 400-epoch warm-up of the official schedule, lr * e / 5 up to e = 10
    (2 x lr at e = 10, then back to lr): ltjax warms up over epochs 1-5 as the
    200-epoch schedule and keeps lr for epochs 6-10;
  * a change of the VS tau at the switch: stage A's tau differs from stage B's
    on cifar100 exp 100 (1.0 -> 0.75), cifar100 exp 10 (0.5 -> 0.75) and
    cifar10 step 100 (1.25 -> 1.0); loss.vs_tau is one value, stage B's here.

BatchNorm in a SAM step: DDC's cifar_train_sam.py runs both forward passes in train
mode, so PyTorch updates the running statistics twice, the second time at the perturbed
weights; the recipe does the same (sam.batch_norm_statistics='both_passes'; Google's Flax
SAM keeps the clean pass's, 'clean_pass'). The ResNet-32 study's controlled experiment
sam_batch_norm_both_passes measured little difference there (CE + SAM, seed 0: 79.95
both passes, 79.85 clean pass).

The cifar100 exp 100 resume path in the script names rho [0.2, 0.2] for stage
A while its VS line says 0.3; this recipe takes the VS line.

Paper numbers (Table 1, mean of 5 seeds, as printed), columns CIFAR-10 LT-100,
LT-10, Step-100, Step-10 | CIFAR-100 LT-100, LT-10, Step-100, Step-10:
  w/o SAM (sam=false)
    CE           71.5 87.0 64.8 85.1 | 38.3 56.7 38.6 54.4
    LDAM         73.8 86.4 65.8 85.0 | 39.9 55.7 39.2 50.5
    VS           78.8 88.7 76.1 88.3 | 41.8 58.4 46.2 59.9
    CE+DRW       75.8 87.9 72.2 88.0 | 40.8 58.1 45.4 59.1
    LDAM+DRW     77.7 87.5 77.8 87.8 | 42.7 57.5 45.3 56.9
    VS+DRW       80.1 88.6 78.2 88.1 | 41.3 57.6 44.0 58.0
    CE+ADRW      78.6 88.2 75.5 88.5 | 41.8 58.3 46.5 59.2
    LDAM+ADRW    79.1 87.6 78.5 88.1 | 43.0 58.0 45.8 57.6
    VS+TLA+DRW   80.8 88.8 80.0 89.2 | 43.0 58.9 46.8 60.0
    VS+TLA+ADRW  81.1 89.0 80.9 89.3 | 43.4 59.2 47.8 60.5
  w/ SAM (sam=true; CE, LDAM, VS+DRW and VS+TLA+DRW have no "w/ SAM" row)
    CE+DRW       80.5 89.8 79.5 90.2 | 44.7 60.7 48.5 61.7
    LDAM+DRW     81.6 89.4 81.2 89.4 | 45.2 59.9 49.1 59.3
    VS           82.6 90.0 83.2 90.5 | 45.9 61.0 47.4 61.6
    CE+ADRW      82.6 90.1 82.8 90.2 | 44.9 61.0 48.9 62.1
    LDAM+ADRW    83.0 89.7 82.4 90.0 | 46.3 60.3 49.3 60.3
    VS+TLA+ADRW  83.6 90.3 83.8 90.8 | 46.4 61.9 49.1 62.3
The default (vs_tla_adrw, SAM, CIFAR-100 LT-100) is printed as 46.4 +- 0.6.
The official README (conference version, VS + ADRW + TLA) reports what the
two protocols here reproduce, same column order:
  200 epochs, wd 2e-4  80.81 88.86 80.78 89.24 | 43.20 58.90 47.60 60.12
  400 ep + SAM + RandAug 86.42 91.82 85.55 91.80 | 53.05 65.59 51.69 64.98
(the default row: 53.05 +- 0.12; the README warns that its numbers "might be
slightly different" from the paper's after reproducibility fixes). So sam=true
targets the README's 400-epoch table; the lower "w/ SAM" numbers of Table 1
(46.4 against 53.05) come from an unpublished protocol, 200 epochs without
RandAug as Saddle-LongTail's CIFAR runs by all appearances.
No ltjax number yet.

Device time (estimate from the measured H100 step time x steps; input pipeline
not included; benchmarks/README.md, 'Train step on the H100': ResNet-32 batch
128, 6.5 ms; SAM doubles the step): steps = N // 128 per epoch, N = 10,847
(cifar100 exp 100) to 27,500 (step 10). sam=false: 200 epochs x 6.5 ms =
0.03-0.08 h; sam=true: 400 epochs x 13 ms = 0.12 h for the default, up to
0.31 h (step profiles, IR 10). AutoAugment runs on the host and may bound it.

DATA_DIR holds CIFAR's python-pickle folder (cifar-100-python / cifar-10-batches-py);
add --config.data.name=tfds to read a prepared TFDS set instead (README, "Data"):

    python launch/train.py \
      --config=configs/ddc_cifar_lt.py:method=vs_tla_adrw,sam=true,dataset=cifar100,ir=100 \
      --config.data.data_dir=DATA_DIR --workdir=runs/ddc_vs_tla_adrw_sam_cifar100_lt_ir100

Arguments: method (vs_tla_adrw, ce_adrw, ldam_adrw, vs_tla_drw; the baselines
ce, ldam, vs, ce_drw, ldam_drw, vs_drw), sam (true, false), dataset (cifar10, cifar100), ir (100, 10: the scripted ratios),
profile (exp, step).
"""

from ltjax.configs import ce_cifar_lt
from ltjax.configs import common
from ltjax.configs import provenance as p

# Table 1's rows: the baselines, then DDC's own.
BASELINES = ('ce', 'ldam', 'vs', 'ce_drw', 'ldam_drw', 'vs_drw')
METHODS = ('vs_tla_adrw', 'ce_adrw', 'ldam_adrw', 'vs_tla_drw') + BASELINES
ARGUMENTS = dict(
    method=METHODS,
    sam=(True, False),
    dataset=('cifar100', 'cifar10'),
    ir=(100.0, 10.0),
    profile=('exp', 'step'),
)
CODE = p.Repo('wang22ti/DDC', '4bd4fb3')
PAPER = p.Paper('DDC (Wang et al., NeurIPS 2023)')
TRAIN = CODE('cifar_train_sam.py')
SCRIPT = CODE('bash_script.sh')
LR_RULE = CODE('utils/utils.py adjust_learning_rate')
BORROWED = p.assumed(
    "Table 1 defers its per-row values to Appendix F (not available); the same setting's "
    'line of bash_script.sh'
)
# Which line of bash_script.sh each method takes its values from, and the methods the script
# itself runs (their values are the script's, with sam=true).
LINES = {'ce': 'ce', 'ce_drw': 'ce', 'ce_adrw': 'ce', 'ldam': 'ldam', 'ldam_drw': 'ldam'}
LINES.update(ldam_adrw='ldam', vs='vs', vs_drw='vs', vs_tla_drw='vs', vs_tla_adrw='vs')
SCRIPTED = ('ce', 'ldam_drw', 'vs', 'vs_tla_adrw')
SCHEDULES = {'drw': 'drw', 'adrw': 'adrw', 'tla_drw': 'drw_tla', 'tla_adrw': 'adrw_tla'}

# bash_script.sh per (dataset, profile, IR): ce and ldam (rho, wd) of the CE and LDAM+DRW lines;
# vs (gamma, tau, rho, wd) of the VS line (stage A of ADRW-T); adrw_t (nu, tau, rho from the
# switch) of the ADRW-T line (stage B). See the table of the module docstring.
_SCRIPT = {
    ('cifar100', 'exp', 100): dict(
        ce=(0.2, 1e-4), ldam=(0.5, 1e-4), vs=(0.05, 1.0, 0.3, 2e-4), adrw_t=(0.25, 0.75, 0.4)
    ),
    ('cifar100', 'exp', 10): dict(
        ce=(0.1, 1e-4), ldam=(0.3, 5e-5), vs=(0.05, 0.5, 0.1, 1e-4), adrw_t=(0.1, 0.75, 0.5)
    ),
    ('cifar100', 'step', 100): dict(
        ce=(0.3, 1e-5), ldam=(0.3, 5e-5), vs=(0.0, 1.0, 0.2, 1e-4), adrw_t=(0.1, 1.0, 0.2)
    ),
    ('cifar100', 'step', 10): dict(
        ce=(0.1, 1e-5), ldam=(0.4, 5e-5), vs=(0.0, 1.0, 0.1, 1e-4), adrw_t=(0.05, 1.0, 0.3)
    ),
    ('cifar10', 'exp', 100): dict(
        ce=(0.1, 1e-4), ldam=(0.4, 5e-5), vs=(0.05, 1.0, 0.1, 2e-4), adrw_t=(0.15, 1.0, 0.2)
    ),
    ('cifar10', 'exp', 10): dict(
        ce=(0.1, 1e-4), ldam=(0.4, 1e-5), vs=(0.0, 1.0, 0.1, 1e-4), adrw_t=(0.1, 1.0, 0.1)
    ),
    ('cifar10', 'step', 100): dict(
        ce=(0.1, 5e-5), ldam=(0.2, 5e-5), vs=(0.0, 1.25, 0.1, 1e-4), adrw_t=(0.1, 1.0, 0.2)
    ),
    ('cifar10', 'step', 10): dict(
        ce=(0.1, 5e-5), ldam=(0.2, 5e-5), vs=(0.0, 1.0, 0.1, 1e-4), adrw_t=(0.1, 1.0, 0.1)
    ),
}


def settings(args) -> p.Settings:
  key = (args.dataset, args.profile, int(args.ir))
  if key not in _SCRIPT or args.ir != int(args.ir):
    raise ValueError(
        f'DDC scripts dataset in (cifar10, cifar100), profile in (exp, step) and ir in (100, 10); '
        f'got {args.dataset}, {args.profile}, {args.ir}.'
    )
  script = _SCRIPT[key]
  factor = 2 if args.sam else 1  # The official epochs // 200.
  switch = 160 * factor
  s = p.Settings()
  common.cifar_lt(
      s,
      dataset=args.dataset,
      imbalance_ratio=args.ir,
      profile=args.profile,
      ratio_source=PAPER('Table 1 columns (LT / Step, IR 100 / 10)'),
  )
  ce_cifar_lt.ldam_drw_protocol(s)  # DDC's code is LDAM-DRW's (its models/resnet_cifar.py).
  epochs = SCRIPT if args.sam else p.protocol('LDAM-DRW 200 epochs (the README standard setting)')
  s.set('seed', 0, TRAIN)
  s.set('model.head_init', 'kaiming_normal', CODE('models/resnet_cifar.py _weights_init'))
  s.set('num_epochs', 200 * factor, epochs)
  s.set('eval_every_epochs', 1, TRAIN)  # Evaluates and keeps the best on test every epoch.
  s.set('schedule.epoch_offset', 1, LR_RULE)  # The lr is computed from e = epoch + 1.
  # The 400-epoch ramp to 2 x lr is not expressible: warm-up over epochs 1-5 as at 200.
  s.set('schedule.warmup_epochs', 5, LR_RULE)
  s.set('schedule.milestones', (160 * factor + 1, 180 * factor + 1), LR_RULE)

  nu, tau_b, rho_b = script['adrw_t']
  gamma_a, tau_a, rho_a, wd_a = script['vs']
  line = LINES[args.method]
  value_source = SCRIPT if args.method in SCRIPTED and args.sam else BORROWED
  loss_source = PAPER(f'Table 1 row {args.method}')
  s.set('loss.name', {'ce': 'cross_entropy', 'ldam': 'ldam', 'vs': 'vs'}[line], loss_source)
  reweighting = args.method.partition('_')[2]  # '', 'drw', 'adrw', 'tla_drw', 'tla_adrw'.
  schedule = SCHEDULES.get(reweighting, 'none')
  s.set('loss.schedule', schedule, loss_source)
  if schedule != 'none':
    s.set(
        'loss.switch_epoch', switch, CODE('cifar_train_sam.py (t_reweight = epochs // 200 * 160)')
    )
  if schedule in ('drw', 'drw_tla'):
    s.set('loss.drw_beta', 0.9999, CODE('cifar_train_sam.py (DRW betas [0, 0.9999])'))
  if schedule in ('adrw', 'adrw_tla'):
    nu_source = SCRIPT if args.method == 'vs_tla_adrw' and args.sam else BORROWED
    s.set('loss.adrw_nu', nu, nu_source)
  if line == 'ldam':
    s.set('model.head', 'cosine', CODE('models/resnet_cifar.py NormedLinear (use_norm for LDAM)'))
    # NormedLinear is no nn.Linear: _weights_init leaves its own unit-norm init alone.
    s.set('model.head_init', 'torch', CODE('models/resnet_cifar.py NormedLinear'))
    s.set('loss.ldam_max_margin', 0.5, TRAIN)
    s.set('loss.ldam_scale', 30.0, TRAIN)
  own = args.method.startswith('vs_tla')  # DDC's VS rows: one run for stage A + stage B.
  if line == 'vs':
    s.set('loss.vs_gamma', gamma_a, value_source)  # TLA sets it to 0 from the switch.
    # DDC's own rows take stage B's tau (the ADRW-T line); the VS baselines stage A's.
    s.set('loss.vs_tau', tau_b if own else tau_a, value_source)

  if args.sam:
    s.set('data.augment', 'autoaugment', CODE('cifar_train_sam.py (--randaug 1)'))
    if own:
      # The resumed stage B restores stage A's optimiser state, weight decay included.
      rho, wd = (rho_a, rho_b), wd_a
    elif line == 'vs':
      rho, wd = (rho_a, rho_a), wd_a
    else:
      rho, wd = (script[line][0],) * 2, script[line][1]
    s.set('optim.weight_decay', wd, value_source)
    s.set('sam.rho_boundaries', (switch,), CODE('utils/utils.py adjust_rho'))
    s.set('sam.rho_values', rho, value_source)
    s.set('sam.perturb', '.*', CODE('utils/sam.py'))
    s.set('sam.batch_norm_statistics', 'both_passes', TRAIN)  # Both passes in train mode.
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
