"""ltjax.study and launch/study.py: cells, resumption, stage-1 reuse, aggregation, the table."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from helpers import Interrupt
from helpers import REPO
from ltjax import files
from ltjax.data import longtail
from ltjax.eval import metrics
from ltjax.study import aggregate
from ltjax.study import cells
from ltjax.study import runner
from ltjax.train import checkpoint
from ltjax.train import loop
from ltjax.train import results as run_results
from ltjax.train import stopping
from ltjax.train import workdir_lock

TINY = {  # ce_default's recipe, made smoke-sized on the synthetic gratings.
    'data': {'name': 'synthetic', 'imbalance_ratio': 4.0, 'augment': 'none', 'n_max': 40},
    'num_train_steps': 6,
    'batch_size': 16,
    'eval_batch_size': 200,
    'log_every_steps': 3,
    'checkpoint_every_steps': 2,
    'eval_every_epochs': 100,
    'progress_bar': False,
    'eval': {'many_threshold': 30, 'few_threshold': 15},  # All three groups have classes.
}


def tiny_study(report=False) -> ml_collections.ConfigDict:
  study = ml_collections.ConfigDict()
  study.seeds = (0, 1)
  study.report = report
  study.common = TINY
  study.methods = ml_collections.ConfigDict()
  study.methods.ce = {'recipe': 'configs/ce_default.py', 'label': 'CE'}
  study.methods.crt = {
      'recipe': 'configs/ce_default.py',
      'overrides': {'stage2': {'num_epochs': 1, 'head': 'reinit', 'trainable': 'head/.*'}},
      'label': 'cRT',
  }
  return study


def test_cells_commands_and_states(tmp_path):
  study = tiny_study()
  all_cells = cells.cells(study, str(tmp_path))
  assert [(c.method, c.seed) for c in all_cells] == [('ce', 0), ('crt', 0), ('ce', 1), ('crt', 1)]
  assert all_cells[3].workdir == os.path.join(str(tmp_path), 'crt', 'seed1')
  assert all(c.state() == cells.PENDING for c in all_cells)
  command = all_cells[3].command()
  assert command.startswith('python -m ltjax.train --config=configs/ce_default.py ')
  assert '--config.stage2.head=reinit' in command and '--config.seed=1' in command
  assert command.endswith(f'--workdir={all_cells[3].workdir}')
  config = all_cells[3].config()
  assert (config.seed, config.stage2.num_epochs, config.data.name) == (1, 1, 'synthetic')
  study.methods.ce = {'recipe': 'configs/ce_default.py', 'overrides': {'loss': {'nmae': 'x'}}}
  with pytest.raises(ValueError, match=r"study method 'ce': cannot set config.loss.nmae"):
    cells.cells(study, str(tmp_path))[0].config()


def test_a_study_resumes_skips_reuses_stage1_and_aggregates(tmp_path, monkeypatch):
  study, workdir = tiny_study(report=True), str(tmp_path)
  # Interrupt the second cell (ce seed 1) after its 4th step, as a kill would.
  real = loop.train_and_evaluate

  def interrupted(config, cell_workdir, **kwargs):
    def hook(step, state):
      if cell_workdir.endswith(os.path.join('ce', 'seed1')) and step == 4:
        raise Interrupt()

    return real(config, cell_workdir, hooks=[hook])

  monkeypatch.setattr(loop, 'train_and_evaluate', interrupted)
  failed = runner.run(study, workdir, log=lambda line: None)
  assert [(c.method, c.seed) for c in failed] == [('ce', 1)]
  states = {(c.method, c.seed): c.state() for c in cells.cells(study, workdir)}
  assert states == {('ce', 0): 'done', ('ce', 1): 'partial', ('crt', 0): 'done', ('crt', 1): 'done'}
  # crt seed 0 reused ce seed 0's stage 1 (the identical config and seed); crt seed 1 had no
  # finished source then and trained its own.
  crt0 = json.load(open(os.path.join(workdir, 'crt', 'seed0', 'cell.json')))
  assert crt0['stage1_from'] == os.path.join('..', 'ce', 'seed0')
  assert 'stage1_from' not in json.load(open(os.path.join(workdir, 'crt', 'seed1', 'cell.json')))
  ce0 = run_results.read_run(os.path.join(workdir, 'ce', 'seed0'))
  crt0_run = run_results.read_run(os.path.join(workdir, 'crt', 'seed0'))
  assert crt0_run['stages']['stage1']['test'] == ce0['stages']['stage1']['test']
  assert os.path.exists(os.path.join(workdir, 'ce', 'seed1', 'failed.txt'))

  finished = os.path.getmtime(os.path.join(workdir, 'ce', 'seed0', 'results.json'))
  monkeypatch.setattr(loop, 'train_and_evaluate', real)
  log = []
  assert runner.run(study, workdir, log=log.append) == []
  assert os.path.getmtime(os.path.join(workdir, 'ce', 'seed0', 'results.json')) == finished
  assert '[3/4] ce seed 1: resuming' in log[2]
  assert sum('done, skipped' in line for line in log) == 3
  assert not os.path.exists(os.path.join(workdir, 'ce', 'seed1', 'failed.txt'))
  resumed = run_results.read_run(os.path.join(workdir, 'ce', 'seed1'))
  assert resumed['stages']['stage1']['resumed'] and resumed['stages']['stage1']['step'] == 6
  # Its minutes are both processes' (ltjax.train.wall_time), not the last one's alone.
  assert resumed['stages']['stage1']['wall_seconds_complete']

  summary = aggregate.summarize(study, workdir)
  by_name = {m['name']: m for m in summary['methods']}
  for name in ('ce', 'crt'):
    runs = [run_results.read_run(os.path.join(workdir, name, f'seed{s}')) for s in (0, 1)]
    finals = [r['stages'][r['final']]['test'] for r in runs]
    for group in ('accuracy', 'many', 'medium', 'few'):
      values = 100 * np.array([f[group] for f in finals])
      assert by_name[name]['mean'][group] == pytest.approx(values.mean())
      assert by_name[name]['std'][group] == pytest.approx(values.std(ddof=1))
    best = int(np.argmax([f['accuracy'] for f in finals]))
    assert by_name[name]['best']['seed'] == best
    assert by_name[name]['best']['accuracy'] == pytest.approx(100 * finals[best]['accuracy'])
  assert 'stage1_mean' in by_name['crt'] and 'stage1_mean' not in by_name['ce']
  assert by_name['crt']['stage1_mean']['accuracy'] == pytest.approx(
      by_name['ce']['mean']['accuracy']
  )  # The same stage 1 (reused for seed 0, retrained identically for seed 1).
  assert set(by_name['ce']['report']) == {'L_i', 'r_i', 'weight norm', 'feature norm'}

  # The best test evaluation of the final stage (stage 2's for cRT), as the official code reports.
  for name, folder in (('ce', ''), ('crt', 'stage2')):
    bests = []
    for seed in (0, 1):
      with open(os.path.join(workdir, name, f'seed{seed}', folder, 'metrics.jsonl')) as f:
        rows = [json.loads(line) for line in f]
      tests = [r['accuracy'] for r in rows if r['split'] == 'test']
      assert tests, (name, seed)
      bests.append(100 * max(tests))
    assert by_name[name]['best_evaluation_mean'] == pytest.approx(np.mean(bests))

  table = aggregate.markdown_table(summary).splitlines()
  assert table[0].startswith(
      '| method | seeds | all | many | medium | few | best of N (all) | best evaluation (all) |'
  )
  ce_row = table[2].split(' | ')
  mean, std = by_name['ce']['mean']['accuracy'], by_name['ce']['std']['accuracy']
  assert ce_row[0] == '| CE' and ce_row[1] == '2' and ce_row[2] == f'{mean:.2f} ± {std:.2f}'
  assert ce_row[7] == f'{by_name["ce"]["best_evaluation_mean"]:.2f}'
  assert '≥' not in '\n'.join(table)
  paths = aggregate.write(summary, workdir)
  assert {os.path.basename(p) for p in paths} == {
      'study.json',
      'study.md',
      'study_groups.png',
      'study_per_class.png',
  }

  # A record from before wall_time.json: a resumed stage's minutes are a lower bound.
  path = os.path.join(workdir, 'ce', 'seed1', run_results.FILENAME)
  old = json.load(open(path))
  del old['stages']['stage1']['wall_seconds_complete']
  run_results.write_json(path, old)
  table = aggregate.markdown_table(aggregate.summarize(study, workdir)).splitlines()
  assert table[2].split(' | ')[10].startswith('≥ ') and table[3].split(' | ')[10][0].isdigit()
  assert table[-1].startswith('≥: a cell resumed from a checkpoint older than its time record')


def test_the_best_evaluation_is_the_final_stages_and_none_after_a_posthoc_adjustment(tmp_path):
  def rows(folder, accuracies):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
      f.write(json.dumps({'step': 1, 'epoch': 0.5, 'split': 'train', 'accuracy': 0.99}) + '\n')
      for epoch, accuracy in enumerate(accuracies, 1):
        f.write(json.dumps({'step': epoch, 'epoch': epoch, 'split': 'test', 'accuracy': accuracy}))
        f.write('\n')

  workdir = str(tmp_path)
  rows(workdir, [0.5, 0.7, 0.6])
  one_stage = {'final': 'stage1', 'stages': {'stage1': {'posthoc': None}}}
  assert aggregate._best_evaluation(workdir, one_stage) == {'accuracy': 70.0, 'epoch': 2}
  rows(os.path.join(workdir, 'stage2'), [0.4, 0.45, 0.41])
  two_stage = {'final': 'stage2', 'stages': {'stage1': {}, 'stage2': {'posthoc': None}}}
  assert aggregate._best_evaluation(workdir, two_stage) == {'accuracy': 45.0, 'epoch': 2}
  adjusted = {'final': 'stage1', 'stages': {'stage1': {'posthoc': {'method': 'additive'}}}}
  assert aggregate._best_evaluation(workdir, adjusted) is None


def test_launch_study_dry_run_and_print_commands(tmp_path):
  study_file = tmp_path / 'study.py'
  study_file.write_text(
      'import ml_collections\n'
      'def get_config():\n'
      '  s = ml_collections.ConfigDict()\n'
      '  s.seeds = (0, 1)\n'
      '  s.report = False\n'
      f'  s.common = {TINY!r}\n'
      '  s.methods = ml_collections.ConfigDict()\n'
      "  s.methods.ce = {'recipe': 'configs/ce_default.py', 'label': 'CE'}\n"
      '  return s\n'
  )
  workdir = tmp_path / 'run'
  os.makedirs(workdir / 'ce' / 'seed1')
  (workdir / 'ce' / 'seed1' / 'config.json').write_text('{}')

  def launch(*flags):
    return subprocess.run(
        [
            sys.executable,
            'launch/study.py',
            f'--study={study_file}',
            f'--workdir={workdir}',
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()

  dry = launch('--dry_run', '--study.seeds=(0, 1)')
  assert dry[0].split() == ['pending', 'ce', 'seed', '0', str(workdir / 'ce' / 'seed0')]
  assert dry[1].split()[0] == 'partial'
  assert dry[2] == '0 done, 1 partial, 1 pending'
  commands = launch('--print_commands', '--study.seeds=(3,)')
  assert len(commands) == 1
  assert commands[0].startswith('python -m ltjax.train --config=configs/ce_default.py')
  assert commands[0].endswith(f'--config.seed=3 --workdir={workdir / "ce" / "seed3"}')


def test_a_cell_run_with_other_settings_stops_the_study_before_anything_runs(tmp_path):
  study, workdir = tiny_study(), str(tmp_path)
  cell = cells.cells(study, workdir)[1]  # crt seed 0.
  os.makedirs(cell.workdir)
  recorded = {'recipe': cell.recipe, 'overrides': {**cell.overrides, 'stage2.num_epochs': 3}}
  with open(os.path.join(cell.workdir, 'cell.json'), 'w') as f:
    json.dump(recorded, f)
  with pytest.raises(ValueError, match=r'crt/seed0: stage2.num_epochs'):
    runner.run(study, workdir, log=lambda line: None)
  assert sorted(os.listdir(workdir)) == ['crt']  # Nothing ran.
  recorded['overrides']['stage2.num_epochs'] = 1  # As the study gives it (tuples as lists).
  with open(os.path.join(cell.workdir, 'cell.json'), 'w') as f:
    json.dump(json.loads(json.dumps(recorded)), f)
  runner.check_recorded_settings(cells.cells(study, workdir))


def _finished_ce_cell(study, workdir) -> cells.Cell:
  """ce seed 0, recorded as the study gives it now (cell.json) and finished (no config.json)."""
  cell = cells.cells(study, workdir)[0]
  os.makedirs(cell.workdir)
  files.write_json(
      os.path.join(cell.workdir, 'cell.json'),
      json.loads(json.dumps({'recipe': cell.recipe, 'overrides': cell.overrides})),
  )
  files.write_json(os.path.join(cell.workdir, run_results.FILENAME), {})
  return cell


def test_an_override_that_restates_what_the_cell_ran_is_no_change(tmp_path):
  # A study pins a value its recipe has since changed, to keep the cells that ran with it:
  # the overrides differ from cell.json, the config does not.
  study, workdir = tiny_study(), str(tmp_path)
  cell = _finished_ce_cell(study, workdir)
  pinned = cell.config().optim.weight_decay
  study.methods.ce.overrides = {'optim': {'weight_decay': pinned}}
  with pytest.raises(ValueError, match=r'ce/seed0: optim.weight_decay$'):
    runner.check_recorded_settings(cells.cells(study, workdir))  # No config.json to read.
  checkpoint.save_config(cells.cells(study, workdir)[0].config(), cell.workdir)
  runner.check_recorded_settings(cells.cells(study, workdir))
  study.methods.ce.overrides = {'optim': {'weight_decay': 2 * pinned}}
  with pytest.raises(ValueError, match=r'ce/seed0: optim.weight_decay$'):
    runner.check_recorded_settings(cells.cells(study, workdir))


def test_a_finished_cell_whose_recipe_file_changed_since_stops_the_study(tmp_path):
  # The study's recipe and overrides are unchanged (cell.json agrees), but the recipe file now
  # gives another value than the finished cell trained with: skipping the cell would put two
  # settings in one row.
  study, workdir = tiny_study(), str(tmp_path)
  cell = _finished_ce_cell(study, workdir)
  config = cell.config()
  config.optim.weight_decay = 2 * config.optim.weight_decay  # What the recipe gave then.
  config.eval_every_epochs = 7  # Watching differently changes no number.
  checkpoint.save_config(config, cell.workdir)
  with pytest.raises(
      ValueError,
      match=r'ce/seed0 \(its config.json, recorded -> now\): '
      r'optim.weight_decay: 0.001 -> 0.0005$',
  ):
    runner.run(study, workdir, log=lambda line: None)
  assert sorted(os.listdir(workdir)) == ['ce']  # Nothing ran.
  config.optim.weight_decay = cell.config().optim.weight_decay
  checkpoint.save_config(config, cell.workdir)
  runner.check_recorded_settings(cells.cells(study, workdir))
  # A partial cell is checked without its stage-2 keys (its stage 2 records its own).
  os.remove(os.path.join(cell.workdir, run_results.FILENAME))
  config.stage2.num_epochs = 5
  checkpoint.save_config(config, cell.workdir)
  runner.check_recorded_settings(cells.cells(study, workdir))
  files.write_json(os.path.join(cell.workdir, run_results.FILENAME), {})
  with pytest.raises(ValueError, match=r'stage2.num_epochs: 5 -> 0'):
    runner.check_recorded_settings(cells.cells(study, workdir))


def test_a_stop_request_ends_the_study_instead_of_failing_the_cell(tmp_path, monkeypatch):
  def stopped(config, workdir, **kwargs):
    raise stopping.Stopped('Stopped at step 3 (SIGTERM).', 3)

  monkeypatch.setattr(loop, 'train_and_evaluate', stopped)
  with pytest.raises(stopping.Stopped):
    runner.run(tiny_study(), str(tmp_path), log=lambda line: None)
  assert not os.path.exists(tmp_path / 'ce' / 'seed0' / 'failed.txt')


def test_a_cell_held_by_another_lock_holder_is_skipped_not_failed(tmp_path, monkeypatch):
  study, workdir = tiny_study(), str(tmp_path)
  held = cells.cells(study, workdir)[1]  # crt seed 0, being trained by another study command.
  trained = []

  def train(config, cell_workdir, **kwargs):  # The real run's locking, without the training.
    del config, kwargs
    with workdir_lock.workdir_lock(cell_workdir):
      trained.append(cell_workdir)
      files.write_json(os.path.join(cell_workdir, run_results.FILENAME), {})

  monkeypatch.setattr(loop, 'train_and_evaluate', train)
  log = []
  with workdir_lock.WorkdirLock(held.workdir):
    failed = runner.run(study, workdir, log=log.append)
    assert failed == []
    assert held.workdir not in trained and len(trained) == 3
    assert not os.path.exists(os.path.join(held.workdir, runner.FAILED_FILENAME))
    assert not os.path.exists(os.path.join(held.workdir, runner.CELL_FILENAME))  # Untouched.
    assert any('[2/4] crt seed 0: running elsewhere' in line for line in log), log
    assert not any('FAILED' in line for line in log)
  # Once the other command let it go, the next run trains it.
  assert runner.run(study, workdir, log=log.append) == [] and trained[-1] == held.workdir


def test_two_study_commands_at_once_share_the_cells(tmp_path, monkeypatch):
  study, workdir = tiny_study(), str(tmp_path)
  study.seeds = (0,)
  real = loop.train_and_evaluate
  second_log = []

  def with_a_second_command(config, cell_workdir, **kwargs):
    def hook(step, state):
      del state
      # While the first command trains ce seed 0, a second one runs on the same study.
      if step == 2 and not second_log:
        second_log.append('started')
        assert runner.run(study, workdir, log=second_log.append) == []

    return real(config, cell_workdir, hooks=[hook], **kwargs)

  monkeypatch.setattr(loop, 'train_and_evaluate', with_a_second_command)
  first_log = []
  assert runner.run(study, workdir, log=first_log.append) == []
  assert any('[1/2] ce seed 0: running elsewhere' in line for line in second_log), second_log
  assert any('[2/2] crt seed 0: done in' in line for line in second_log), second_log
  assert any('[2/2] crt seed 0: done, skipped' in line for line in first_log), first_log
  for cell in cells.cells(study, workdir):
    assert cell.state() == cells.DONE
    assert not os.path.exists(os.path.join(cell.workdir, runner.FAILED_FILENAME))


def test_a_method_can_run_with_some_of_the_study_seeds(tmp_path):
  study = tiny_study()
  study.seeds = (0, 1, 2)
  study.methods.crt.seeds = (0, 2)  # More seeds for a contested row only, say.
  names = [(c.method, c.seed) for c in cells.cells(study, str(tmp_path))]
  assert names == [('ce', 0), ('crt', 0), ('ce', 1), ('ce', 2), ('crt', 2)]
  study.methods.crt.colour = 'red'
  with pytest.raises(ValueError, match='may have overrides, label and seeds'):
    cells.cells(study, str(tmp_path))


def test_the_resnet32_study_builds_every_cell_from_its_recipe():
  study = cells.load_config_file('configs/studies/fashion_mnist_lt_resnet32.py')
  all_cells = cells.cells(study, '/nonexistent')
  assert len(all_cells) == 23 + 2 * 12
  by_name = {c.method: c for c in all_cells if c.seed == 0}
  ddc = by_name['ce_drw'].config()  # 200 -> 60 epochs, switch 160 -> 48, milestones 161 -> 49.
  assert (ddc.num_epochs, ddc.loss.switch_epoch, tuple(ddc.schedule.milestones)) == (
      60,
      48,
      (49, 55),
  )
  assert (ddc.data.name, ddc.data.n_max, ddc.model.name) == ('fashion_mnist', 1000, 'resnet32')
  wb = by_name['wb'].config()  # 200 -> 60; stage 2 10 -> 3; the recipe's optimiser kept.
  assert (wb.num_epochs, wb.stage2.num_epochs, wb.optim.lr, wb.optim.weight_decay) == (
      60,
      3,
      0.01,
      5e-3,
  )
  sam = by_name['vs_tla_adrw_sam'].config()  # 400 -> 120, SAM's radius switch 320 -> 96.
  assert (sam.num_epochs, tuple(sam.sam.rho_boundaries), sam.loss.switch_epoch) == (120, (96,), 96)
  assert by_name['cc_sam'].config().model.name == 'resnet32_ccsam'


def test_every_resnet32_study_row_reports_the_same_nonempty_groups():
  # EWB's recipe thresholds (1000 / 200, set for CIFAR-10-LT's n_max 5000) once left its rows
  # without a single many class on Fashion-MNIST-LT: the table's many column was nan.
  study = cells.load_config_file('configs/studies/fashion_mnist_lt_resnet32.py')
  counts = longtail.long_tail_counts(10, 1000, 100.0, 'exp')
  seen = {}
  for cell in cells.cells(study, '/nonexistent'):
    config = cell.config()
    masks = metrics.class_groups(counts, **metrics.group_options(config.eval))
    seen[cell.method] = tuple(tuple(np.flatnonzero(masks[g])) for g in ('many', 'medium', 'few'))
  assert set(seen.values()) == {((0, 1, 2, 3, 4), (5, 6, 7), (8, 9))}, seen


def test_every_resnet32_experiment_differs_from_its_base_row_in_its_named_keys_only():
  from ltjax.configs.studies import fashion_mnist_lt_resnet32 as study_file
  from ltjax.configs.studies import fashion_mnist_lt_resnet32_experiments as experiments

  study = {c.method: c for c in cells.cells(study_file.get_config(), '/nonexistent') if c.seed == 0}
  every_seed = cells.cells(experiments.get_config(), '/nonexistent')
  runs = {c.method: c for c in every_seed if c.seed == 0}
  assert set(runs) == set(experiments.EXPERIMENTS)
  seeds = {name: {c.seed for c in every_seed if c.method == name} for name in runs}
  assert {name for name, s in seeds.items() if s == {0, 1, 2}} == set(experiments.SEEDED)
  assert all(s in ({0}, {0, 1, 2}) for s in seeds.values()), seeds
  for name, (base, changes, _, scale) in experiments.EXPERIMENTS.items():
    base_config = study[base].config()
    run = cells.flatten(runs[name].config().to_dict())
    differ = {k for k, v in cells.flatten(base_config.to_dict()).items() if run[k] != v}
    if scale == study_file.SCALE:
      assert differ and differ <= set(changes), (name, differ)
    else:  # The papers' budget: every epoch count the recipe's own, and the named keys.
      recipe = cells.load_config_file(study_file.ROWS[base][0])
      budget = set(study_file.budget(recipe, scale))
      assert budget <= differ <= budget | set(changes), (name, differ)
      assert (differ - budget) or not changes, (name, differ)
      assert run['num_epochs'] == recipe.num_epochs, name
