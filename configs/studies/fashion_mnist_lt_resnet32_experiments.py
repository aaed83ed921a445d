r"""The controlled experiments that read the ResNet-32 study against the papers.

    python launch/study.py \
      --study=configs/studies/fashion_mnist_lt_resnet32_experiments.py \
      --workdir=benchmarks/results/study_fashion_mnist_lt_resnet32/experiments

Each row is one row of configs/studies/fashion_mnist_lt_resnet32.py (its
``BASE``: the same recipe, data, backbone, budget and groups, built by that
file's ``row_overrides``) with exactly the keys in ``CHANGES`` changed: one
variable at a time, so the row's difference from its base is that variable's
effect (up to seed noise, which the study's seeds 1 and 2 measure).
tests/test_study.py checks that every row differs from its base in its named
keys and nowhere else.

Rows (question; base row; change):
  ce_lwr_recipe           Focal 70.87 trails CE 79.01 at seed 0, but the two rows
                          come from different recipes (LWR's CIFAR-100 one; DDC's):
                          is it the loss or the recipe? The focal row with CE.
  focal_gamma1            The focal row's gamma is LWR's unstated one, assumed 2
                          (the focal loss paper's default); LDAM-DRW's official
                          cifar_train.py (kaidic/LDAM-DRW), whose CIFAR baselines
                          the later papers quote, trains focal with gamma 1.
  mixup_without_mixup     Mixup 77.81 is below CE 79.01 where CC-SAM's Table 1 has
                          CE + Mixup above CE, but again two recipes (CC-SAM's
                          stage-1 setting; DDC's): the mixup row with mixup off.
  lort_delta_3to1         LORT trails cRT here as in the first study. LOS's delta
                          0.98 (PyTorch label smoothing) is set for 100 classes:
                          true : other target 3 : 1; on 10 classes it is 1.2 : 1.
                          delta 0.83 keeps 3 : 1 (the first study's follow-up,
                          there on the small CNN).
  cc_sam_stage2_30_epochs CC-SAM's stage 2 (9 epochs, scaled from 30) peaks at
                          epoch 3 (81.10) and falls to 74.83 as its adversarial
                          share ramps to 1 (T-shirt 75.4 -> 0.0): is it the
                          compressed ramp? The paper's 30 epochs.
  sam_without_sam         Does SAM help CE? The SAM row's protocol (400 -> 120
                          epochs, AutoAugment + Cutout, its warm-up and decay)
                          differs from the CE row's in more than SAM: the SAM row
                          with SAM switched off (no radius at all: the plain step).
  vs_tla_adrw_sam_without_sam  The same for VS + TLA + ADRW (DDC Table 1's +SAM line).
  sam_batch_norm_both_passes  SAM lowers CE within its protocol (84.07 without, 79.85
                          with). The one known difference from DDC's SAM: its
                          PyTorch passes both update BatchNorm's running
                          statistics; the SAM row with 'both_passes'.
  ldam_drw_without_margin LDAM-DRW 82.59 trails CE-DRW 83.08 at seed 0 (DDC: +1.9
                          the other way) on one class, Shirt (12.5 vs 40.6): its
                          margins or its normalised head (s = 30)? LDAM-DRW with
                          max margin 0 keeps the head and DRW and drops the margins.
  cc_sam_adversarial_cap_0_3  CC-SAM's stage 2 also falls with 30 epochs (peak 82.95
                          at epoch 8, final 74.50, T-shirt 0.0): is it the end of
                          its ramp, where the loss is the adversarial term alone,
                          weighted log(n_max / n_c + 0.01) / 2 per class (0.005 for
                          the head class)? CC-SAM's CIFAR-100 cap of the adversarial
                          share, 0.3, keeps 0.7 of the plain cross-entropy.
  ce_full_budget          The budget: the CE row at the papers' epochs (scale 1.0:
                          200 epochs, milestones 160 / 180) instead of 0.3.
  ldam_drw_full_budget    LDAM-DRW the same (DRW from epoch 160).
  vs_tla_adrw_full_budget VS + TLA + ADRW the same.
  sam_rho_0_05            SAM still costs CE 4 points with DDC's BatchNorm statistics
                          (79.95): is rho 0.1 (DDC's CIFAR-10 CE line) too large for
                          this data? The SAM row at SAM's own CIFAR default, 0.05.
  ce_drw_full_budget      LDAM-DRW gains 1.9 at the full budget (84.51; CE 0.06):
                          does it overtake CE-DRW (83.08 at 60 epochs), as in DDC's
                          Table 1? CE-DRW at the full budget.
  sam_full_budget         SAM costs CE 3 to 4 points within its own protocol at 120
                          epochs (seed 0), at rho 0.1 and 0.05, with either
                          BatchNorm choice: is it the budget? DDC cites SAM for
                          letting the minority classes escape saddle points, which
                          may need the long schedule: the SAM row at its 400 epochs
                          (radius switch at 320).
  sam_without_sam_full_budget  Its control: the same 400 epochs without SAM.

Seed 0, compared with its base row's seed-0 cell; the two controls of the SAM
rows (``SEEDED``) also seeds 1 and 2, so that SAM's effect is read over the
same three seeds as the study's SAM rows.

Cost: the CE-sized rows about 13 minutes each on the 2-core CPU, the SAM
protocol's 120 epochs 24 to 39 (38.8 for sam_batch_norm_both_passes, over two
sessions), the full-budget rows about 43, the full-budget SAM pair about 130
(two passes a step) and 80; the pair is planned after the main study's seeds.
"""

import ml_collections

from ltjax.configs.studies import fashion_mnist_lt_resnet32 as study

_NO_SAM = {'sam.rho': 0.0, 'sam.rho_values': (), 'sam.rho_boundaries': ()}

# name -> (base row of the study, the keys this row changes (flattened), label, scale).
EXPERIMENTS = {
    'ce_lwr_recipe': ('focal', {'loss.name': 'cross_entropy'}, 'CE (LWR recipe)', study.SCALE),
    'focal_gamma1': ('focal', {'loss.focal_gamma': 1.0}, 'Focal, gamma 1', study.SCALE),
    'mixup_without_mixup': (
        'mixup',
        {'data.mixup_alpha': 0.0},
        'Mixup row without mixup',
        study.SCALE,
    ),
    'lort_delta_3to1': (
        'lort',
        {'stage2.loss.lort_delta': 0.83},
        'LORT, delta 0.83 (3:1 target)',
        study.SCALE,
    ),
    'cc_sam_stage2_30_epochs': (
        'cc_sam',
        {'stage2.num_epochs': 30},
        'CC-SAM, stage 2 of 30 epochs',
        study.SCALE,
    ),
    'sam_without_sam': ('sam', _NO_SAM, 'SAM row without SAM', study.SCALE),
    'ldam_drw_without_margin': (
        'ldam_drw',
        {'loss.ldam_max_margin': 0.0},
        'LDAM-DRW without margins',
        study.SCALE,
    ),
    'cc_sam_adversarial_cap_0_3': (
        'cc_sam',
        {'stage2.loss.adversarial_cap': 0.3},
        'CC-SAM, adversarial share capped at 0.3',
        study.SCALE,
    ),
    'vs_tla_adrw_sam_without_sam': (
        'vs_tla_adrw_sam',
        _NO_SAM,
        'VS+TLA+ADRW+SAM row without SAM',
        study.SCALE,
    ),
    'sam_batch_norm_both_passes': (
        'sam',
        {'sam.batch_norm_statistics': 'both_passes'},
        'SAM, BatchNorm statistics of both passes',
        study.SCALE,
    ),
    'ce_full_budget': ('ce', {}, 'CE, full budget', 1.0),
    'ldam_drw_full_budget': ('ldam_drw', {}, 'LDAM-DRW, full budget', 1.0),
    'vs_tla_adrw_full_budget': ('vs_tla_adrw', {}, 'VS+TLA+ADRW, full budget', 1.0),
    'sam_rho_0_05': ('sam', {'sam.rho_values': (0.05, 0.05)}, 'SAM, rho 0.05', study.SCALE),
    'ce_drw_full_budget': ('ce_drw', {}, 'CE-DRW, full budget', 1.0),
    'sam_full_budget': ('sam', {}, 'SAM, full budget', 1.0),
    'sam_without_sam_full_budget': ('sam', _NO_SAM, 'SAM row without SAM, full budget', 1.0),
}


# The controls whose base rows have seeds 1 and 2 in the study: the same seeds.
SEEDED = ('sam_without_sam', 'vs_tla_adrw_sam_without_sam')


def experiment_overrides(name: str) -> tuple[str, dict]:
  """The base row's recipe and (flattened) overrides, with this experiment's changes."""
  base, changes, _, scale = EXPERIMENTS[name]
  recipe, own, _ = study.ROWS[base]
  return recipe, {**study.row_overrides(recipe, own, scale), **changes}


def get_config():
  config = ml_collections.ConfigDict()
  config.seeds = (0, 1, 2)
  config.report = True
  config.common = {}
  m = config.methods = ml_collections.ConfigDict(sort_keys=False)  # The run order.
  for name, (_, _, label, _) in EXPERIMENTS.items():
    recipe, overrides = experiment_overrides(name)
    m[name] = {
        'recipe': recipe,
        'overrides': study.nested(overrides),
        'label': label,
        'seeds': (0, 1, 2) if name in SEEDED else (0,),
    }
  return config
