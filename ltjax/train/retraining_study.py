"""LORT's Table 1 as one command: classifier re-training methods on one frozen stage-1 model.

LORT (Lu et al., arXiv:2403.00250, §3.1, Table 1) compares classifier
re-training methods on the features of one stage-1 backbone: only the
classifier trains, everything else stays frozen, and each method is scored by
test accuracy on all classes and on the many / medium / few groups; its
Fig. 3 adds the group means of the Logits Magnitude L_i (Def. 1) and the
Regularized Standard Deviation r_i (Def. 2). ``run_study`` does this for any
finished stage 1 written by ``launch/train.py``:

  1. Read stage 1's config.json; check the method names (an unknown one
     fails naming the valid ones, before anything runs) and that stage 1's
     classifier is the linear head every row starts from.
  2. The shared protocol: stage 1's config with its ``stage2`` optimiser,
     schedule, batch size and length (``DEFAULT_EPOCHS`` when stage 1 had no
     stage 2) and ``PROTOCOL``: the head starts from stage 1's best
     checkpoint, only ``head/`` trains, BatchNorm is frozen, no augmentation,
     no mixup, instance sampling, plain cross-entropy, no MaxNorm, no
     post-hoc adjustment (the LOS code keeps BatchNorm in train mode during
     re-training; frozen here, every method sees the same features). The loss hyper-parameters (focal gamma, CB beta,
     LDAM margin, LORT delta) are those of stage 1's ``stage2.loss`` (the
     paper's "constant gamma, beta, delta, tau"). ``overrides`` (flattened
     keys, e.g. ``stage2.num_epochs``) change the protocol for every method.
  3. ``METHODS[name](config)`` sets the method's own keys; stage 2 trains in
     ``output_dir/<name>`` with ``ltjax.train.loop.run_stage``. Frozen
     BatchNorm without augmentation or mixup makes every image's features the
     same in each epoch, so every method trains on features extracted once
     (``ltjax.train.feature_cache``, exact; large-image data sets with
     ``eval.image_size`` run the backbone instead). run_stage resumes from the
     method's checkpoints: a finished method is evaluated again, not retrained.
  4. Each method's report (``workdir_report.report_for_workdir``, best
     checkpoint) goes to ``output_dir/<name>/report/``.
  5. ``output_dir/retraining_table.txt`` / ``.json``: one row per method with
     all / many / medium / few test accuracy and the many / medium / few means
     of L_i and r_i; ``ltjax.eval.report.compare_reports`` adds
     comparison.txt / .json and the overlaid plots (per-class accuracy, L_i,
     r_i).

Values chosen on validation. tau-normalisation and post-hoc logit adjustment
are inference-time methods: their rows do not train (one epoch at learning
rate 0 leaves stage 1's classifier exactly as it was) and their tau is chosen
on the validation split by balanced accuracy over ``posthoc.grid``
(``ltjax.eval.posthoc.DEFAULT_GRID``, 0 to 2, when empty), never on the test
split. That needs a stage 1 trained with ``data.val_per_class > 0`` (or a data
set with a validation list). Without one, the default method list leaves those
two rows out and says so in the table's notes; asking for them by name fails
with that message. (The paper keeps tau constant: a one-value grid,
``overrides={'posthoc.grid': (1.0,)}``, fixes it, but ``config.posthoc``
still needs the validation split.)

Post-hoc LA (Menon et al.) is ``config.posthoc.method='additive'``: run_stage
writes the adjusted test metrics to posthoc.json and they are the row's
accuracies. z_c - tau log pi_c shifts logit c by the same amount for every
sample, so L_i and sigma(z_i), hence r_i, of the adjusted logits equal the
unadjusted report's. tau-norm re-scales w_c by |w_c|^-tau (``model.head =
'tau_norm'``, the bias kept as the weight-balancing code does); tau is chosen
on stage 1's validation logits, z_c = (z_c - b_c) |w_c|^-tau + b_c, which is
exact with flip test-time averaging too.
"""

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from ltjax import files
from ltjax import data
from ltjax.eval import posthoc
from ltjax.eval import report as eval_report
from ltjax.train import config_check
from ltjax.train import loop
from ltjax.train import predict
from ltjax.train import sharding
from ltjax.train import stages
from ltjax.train import steps
from ltjax.train import workdir_report
from ltjax.train.checkpoint import load_config
from ltjax.train.final_adjustment import POSTHOC_FILE

DEFAULT_EPOCHS = 10  # Re-training length when stage 1's config has no stage 2.
COSINE_SCALE = 30.0  # s of the cosine classifier trained with CE (LDAM's s).
MAX_NORM_THRESH = 0.1  # MaxNorm threshold: min + 0.1 (max - min) of stage 1's |w_c| (WB).
TABLE_FILE, TABLE_JSON = 'retraining_table.txt', 'retraining_table.json'

# Every method starts from these (flattened keys), then ``overrides``, then the method.
PROTOCOL = {
    'stage2.init_from': 'best',
    'stage2.head': 'keep',
    'stage2.trainable': 'head/.*',
    'stage2.bn': 'frozen',
    'stage2.augment': 'none',
    'stage2.mixup_alpha': 0.0,
    'stage2.sampler': 'instance',
    'stage2.max_norm': 0.0,
    'stage2.feature_cache': 'auto',
    'stage2.loss.name': 'cross_entropy',
    'stage2.loss.schedule': 'none',
    'stage2.loss.label_smoothing': 0.0,
    'stage2.loss.feature_norm_weight': 0.0,
    'stage2.loss.lwr_weight': 0.0,
    'stage2.loss.adversarial_weight': 0.0,
    'stage2.loss.cb_variant': 'softmax_bce',  # Table 1: class-balanced "applied with BCE loss".
    # BCE on the softmax as weight balancing's CB_loss computes it: the weighted mean over B*C.
    'stage2.loss.weighted_reduction': 'batch',
    'posthoc.method': 'none',
}


def _no_training(c):
  """One epoch at learning rate 0: the parameters stay stage 1's, bit for bit."""
  c.stage2.num_epochs, c.stage2.optim.lr = 1, 0.0


def vanilla_fc(c):
  """Vanilla FC: stage 1's linear classifier as it is (Table 1's baseline)."""
  _no_training(c)


def crt(c):
  """cRT (Kang et al.): a fresh linear head, class-aware sampling, CE."""
  c.stage2.head, c.stage2.sampler = 'reinit', 'class_aware'


def cosine(c):
  """Vanilla cosine: z_c = s cos(w_c, f), s = COSINE_SCALE, from stage 1's w_c; CE."""
  c.stage2.head, c.model.head_scale = 'cosine', COSINE_SCALE


def lws(c):
  """Learnable weight scaling: only s_c of s_c (w_c f + b_c) trains, class-aware sampling."""
  c.stage2.head, c.stage2.trainable, c.stage2.sampler = 'lws', 'head/scale', 'class_aware'


def ldam(c):
  """LDAM loss on the cosine head (the official NormedLinear; s and the margins in the loss)."""
  c.stage2.head, c.model.head_scale, c.stage2.loss.name = 'cosine', 1.0, 'ldam'


def balanced_softmax(c):
  """Balanced Softmax: CE(z + log n_c)."""
  c.stage2.loss.name = 'balanced_softmax'


def re_sampling(c):
  """Re-sampling: CE with class-aware (class-balanced) sampling, stage 1's head."""
  c.stage2.sampler = 'class_aware'


def focal(c):
  """Focal loss, gamma = stage2.loss.focal_gamma."""
  c.stage2.loss.name = 'focal'


def class_balanced(c):
  """Class-balanced loss (effective numbers, beta = stage2.loss.cb_beta), softmax-BCE form."""
  c.stage2.loss.name = 'class_balanced'


def max_norm(c):
  """MaxNorm (weight balancing): CE, |w_c| projected after each step onto the ball of radius
  min + MAX_NORM_THRESH (max - min) of stage 1's class-vector norms."""
  c.stage2.max_norm = MAX_NORM_THRESH


def tau_norm(c):
  """tau-normalised stage-1 classifier, no training; tau chosen on validation by run_study."""
  _no_training(c)
  c.stage2.head = 'tau_norm'


def post_hoc_la(c):
  """Post-hoc logit adjustment z_c - tau log pi_c of stage 1's classifier, tau on validation."""
  _no_training(c)
  c.posthoc.method = 'additive'


def lort(c):
  """LORT: the retargeted target 1 - delta + delta / K, delta = stage2.loss.lort_delta."""
  c.stage2.loss.name = 'lort'


# Table 1's rows in its order, cRT (Kang et al.) after vanilla FC, then LORT.
METHODS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    f.__name__: f
    for f in (
        vanilla_fc,
        crt,
        cosine,
        lws,
        ldam,
        balanced_softmax,
        re_sampling,
        focal,
        class_balanced,
        max_norm,
        tau_norm,
        post_hoc_la,
        lort,
    )
}


def needs_validation(config: ml_collections.ConfigDict) -> bool:
  """Whether a method's config chooses a value on the validation split."""
  return config.stage2.head == 'tau_norm' or config.posthoc.method != 'none'


def method_configs(
    stage1_config: ml_collections.ConfigDict,
    methods: Sequence[str] | None = None,
    overrides: dict | None = None,
) -> tuple[dict[str, ml_collections.ConfigDict], list[str]]:
  """({method: the full config its stage 2 derives from}, notes on methods left out).

  Raises ValueError for an unknown method, a stage 1 whose classifier is not
  linear, or a validation-chosen method asked for by name without a
  validation split.
  """
  unknown = [m for m in methods or () if m not in METHODS]
  if unknown:
    raise ValueError(f'Unknown re-training method(s) {unknown}; valid: {list(METHODS)}.')
  if stage1_config.model.head != 'linear':
    raise ValueError(
        f"The re-training study starts from a linear classifier (model.head='linear'); stage 1 "
        f'has model.head={stage1_config.model.head!r}.'
    )
  protocol = ml_collections.ConfigDict(stage1_config.to_dict())
  protocol.stage2.num_epochs = protocol.stage2.num_epochs or DEFAULT_EPOCHS
  protocol.lock()
  protocol.update_from_flattened_dict({**PROTOCOL, **(overrides or {})})
  configs = {}
  for name in methods or METHODS:
    configs[name] = ml_collections.ConfigDict(protocol.to_dict())
    METHODS[name](configs[name])
    config_check.check_names(configs[name])
  notes = []
  need = [m for m, c in configs.items() if needs_validation(c)]
  if need and data.load_datasets(protocol.data).val is None:
    message = (
        f'{", ".join(need)}: tau is chosen on a validation split and stage 1 has none '
        f'(data.val_per_class={protocol.data.val_per_class}); train stage 1 with '
        '--config.data.val_per_class=k (k > 0 images per class held out)'
    )
    if methods:
      raise ValueError(message + f', or leave them out of the methods {list(configs)}.')
    notes.append(message + '. Left out.')
    configs = {m: c for m, c in configs.items() if m not in need}
  return configs, notes


def choose_tau_norm(stage1_workdir: str, config: ml_collections.ConfigDict) -> tuple[float, dict]:
  """(tau, {tau: validation balanced accuracy}) of tau-normalising stage 1's best classifier.

  Logits z = f W + b of the validation split (flip-averaged with
  ``eval.flip_tta``) become (z_c - b_c) |w_c|^-tau + b_c; the grid is
  ``posthoc.grid`` and ties go to the smaller tau, as ``ltjax.eval.posthoc``.
  """
  splits = data.load_datasets(config.data)
  image_size = config.eval.image_size if config.eval.image_size > 0 else None
  first = next(data.eval_batches(splits.val, global_batch_size=1, image_size=image_size))
  state = workdir_report.load_state(
      stage1_workdir,
      config,
      num_classes=len(splits.train_counts),
      input_shape=first['image'].shape[1:],
  )
  mesh = sharding.make_mesh()
  state = jax.device_put(state, sharding.replicated_like(state, mesh))
  val = predict.predict(
      state,
      steps.make_eval_step(state, mesh, flip_tta=config.eval.flip_tta),
      predict.image_batches(splits.val, batch_size=config.eval_batch_size, image_size=image_size),
      mesh=mesh,
  )
  kernel, bias = (np.asarray(state.params['head'][k], np.float32) for k in ('kernel', 'bias'))
  return posthoc.search_grid(
      lambda tau: posthoc.tau_norm_adjust(val['logits'], kernel, bias, tau),
      val['label'],
      tuple(config.posthoc.grid) or posthoc.DEFAULT_GRID,
      len(bias),
  )


def method_report(
    workdir: str, config: ml_collections.ConfigDict, tau_curve: dict | None = None
) -> dict:
  """The method's report; with post-hoc LA, the adjusted accuracies of its posthoc.json.

  A chosen value is recorded under 'posthoc' ({method, value, curve}).
  """
  report = workdir_report.report_for_workdir(workdir)
  if config.stage2.head == 'tau_norm':
    report['posthoc'] = {'method': 'tau_norm', 'value': config.model.head_tau, 'curve': tau_curve}
  if config.posthoc.method != 'none':
    adjusted = files.read_json(files.join(workdir, POSTHOC_FILE))
    metrics = adjusted.pop('metrics')
    report['posthoc'] = {**adjusted, 'unadjusted': {k: report[k] for k in metrics}}
    report.update(metrics)  # L_i and r_i are invariant (module docstring).
  return report


def table_row(report: dict) -> dict:
  """The row of a method: accuracies, group means of L_i and r_i, tau where one was chosen."""
  return eval_report.to_jsonable(
      {
          **{k: report[k] for k in ('accuracy', 'balanced_accuracy', 'many', 'medium', 'few')},
          'logits_magnitude': report['logits_magnitude_groups'],
          'regularized_std': report['regularized_std_groups'],
          'value': (report.get('posthoc') or {}).get('value'),
          'step': report['meta']['step'],
      }
  )


def _cell(value, fmt: str) -> str:
  return 'n/a'.rjust(8) if value is None else format(value, fmt)


def format_table(rows: dict, notes: Sequence[str] = ()) -> str:
  """Text table: test accuracy (%) all / many / medium / few, then L_i and r_i group means."""
  groups, short = ('many', 'medium', 'few'), ('many', 'med', 'few')
  width = max(len('method'), *(len(name) for name in rows))
  header = ['all', *groups] + [f'{q} {g}' for q in ('L', 'r') for g in short]
  lines = [
      'Test accuracy (%) by class group; group means of the logits magnitude L_i and the '
      'regularized standard deviation r_i (LORT Table 1, Fig. 3):',
      ' | '.join(['method'.ljust(width)] + [h.rjust(8) for h in header]),
  ]
  lines.append('-' * len(lines[1]))
  for name, row in rows.items():
    cells = [_cell(None if row[k] is None else 100 * row[k], '8.2f') for k in ('accuracy', *groups)]
    cells += [
        _cell(row[q][g], '8.3f') for q in ('logits_magnitude', 'regularized_std') for g in groups
    ]
    lines.append(' | '.join([name.ljust(width)] + cells))
  values = [
      f'{name}: tau = {row["value"]:g}' for name, row in rows.items() if row['value'] is not None
  ]
  if values:
    notes = [f'{", ".join(values)} (chosen on the validation split)', *notes]
  return '\n'.join(lines + [f'Note: {n}' for n in notes])


def run_study(
    stage1_workdir: str,
    output_dir: str,
    *,
    methods: Sequence[str] | None = None,
    overrides: dict | None = None,
) -> dict:
  """Re-trains stage 1's classifier with each method and compares them (module docstring).

  Args:
    stage1_workdir: a finished stage 1 (its config.json and best checkpoint).
    output_dir: each method trains in ``output_dir/<method>``; the tables go here.
    methods: keys of METHODS, in table order (default: all).
    overrides: flattened config keys for every method, e.g. {'stage2.num_epochs': 20}.

  Returns:
    {'rows': {method: table_row}, 'notes': [...], 'table': the text table,
    'files': the table and comparison files written}.
  """
  stage1_workdir, output_dir = files.absolute(stage1_workdir), files.absolute(output_dir)
  stage1_config = load_config(stage1_workdir)
  configs, notes = method_configs(stage1_config, methods, overrides)
  source = stages.Source(stage1_workdir, 'best', stage1_config)
  reports = {}
  for name, config in configs.items():
    tau_curve = None
    if config.stage2.head == 'tau_norm':
      config.model.head_tau, tau_curve = choose_tau_norm(stage1_workdir, config)
    workdir = files.join(output_dir, name)
    loop.run_stage(stages.Stage(stages.STAGE2, stages.stage2_config(config), workdir, source))
    reports[name] = method_report(workdir, config, tau_curve)
    if jax.process_index() == 0:
      eval_report.write_report(reports[name], files.join(workdir, 'report'), title=name)
  rows = {name: table_row(report) for name, report in reports.items()}
  table = format_table(rows, notes)
  written = [files.join(output_dir, TABLE_FILE), files.join(output_dir, TABLE_JSON)]
  if jax.process_index() == 0:
    files.write_text(written[0], table + '\n')
    files.write_json(
        written[1], {'stage1_workdir': stage1_workdir, 'rows': rows, 'notes': notes}, indent=1
    )
    written += eval_report.compare_reports(reports, output_dir)
  return {'rows': rows, 'notes': notes, 'table': table, 'files': written}
