"""Training stages: what each stage of a config trains, where, and from what.

A config describes one or two stages. Stage 1 trains ``config`` from scratch
in ``workdir``. When ``config.stage2.num_epochs > 0``, stage 2 re-trains the
classifier (cRT, LWS, tau-norm, weight balancing's MaxNorm stage, CC-SAM's
adversarial stage, LORT) in ``workdir/stage2``, starting from stage 1's best
(or latest) checkpoint with everything but ``stage2.trainable`` frozen.

One source of truth: a stage is its complete config plus where it runs and
where it starts from. Stage 2's config is stage 1's with ``config.stage2``'s
loss, optimiser, schedule, data and head settings in place
(``stage2_config``); its re-training settings (what trains, BatchNorm mode,
MaxNorm, feature cache) are read from that config's ``stage2`` block by the
properties of :class:`Stage`, never copied.
"""

import dataclasses
import hashlib
import os

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from ltjax import files
from ltjax import losses
from ltjax import models
from ltjax import optim
from ltjax.param_paths import named_leaves
from ltjax.param_paths import path_mask
from ltjax.train import config_check
from ltjax.train.checkpoint import Checkpoints

STAGE1, STAGE2 = 'stage1', 'stage2'


@dataclasses.dataclass(frozen=True)
class Source:
  """A finished stage whose checkpoint initialises another.

  Attributes:
    workdir: the finished stage's workdir.
    which: its 'best' or 'latest' checkpoint.
    config: the config that wrote it (its model's structure).
  """

  workdir: str
  which: str
  config: ml_collections.ConfigDict


@dataclasses.dataclass(frozen=True)
class Stage:
  """One training stage: a complete config, its directory and how it starts.

  Attributes:
    name: 'stage1' or 'stage2'.
    config: the full config the stage trains with (saved as its config.json).
    workdir: where its checkpoints, metrics and plots go.
    source: the stage whose checkpoint initialises this one (None: fresh).
  """

  name: str
  config: ml_collections.ConfigDict
  workdir: str
  source: Source | None = None

  # Re-training settings, from ``config.stage2`` of a stage that starts from a
  # source; a fresh stage trains everything in the ordinary way.

  @property
  def trainable(self) -> str | None:
    """Regex of the parameter paths that train (None: all): stage2.trainable, or trainable."""
    if self.source:
      return self.config.stage2.trainable or None
    return self.config.trainable or None

  @property
  def train_bn(self) -> bool:
    """BatchNorm in train mode (batch statistics, running averages updated)."""
    return self.config.stage2.bn == 'update' if self.source else True

  @property
  def reinit_head(self) -> bool:
    """Start the head from scratch (cRT) instead of the source's."""
    return bool(self.source) and self.config.stage2.head == 'reinit'

  @property
  def max_norm(self) -> float:
    """> 0: projected MaxNorm on head/kernel with this threshold."""
    return self.config.stage2.max_norm if self.source else 0.0

  @property
  def max_norm_per_epoch(self) -> bool:
    return bool(self.source) and self.config.stage2.max_norm_per_epoch

  @property
  def feature_cache(self) -> str:
    """'auto', 'on' or 'off' (see ltjax.train.feature_cache)."""
    return self.config.stage2.feature_cache if self.source else 'off'


def training_epochs(config: ml_collections.ConfigDict, steps_per_epoch: int) -> float:
  """The stage's length in epochs: what its schedules (learning rate, LWR, CC-SAM's
  adversarial mix) run over. ``num_train_steps > 0`` sets it, so a run asked for N steps
  anneals over those N steps, not over ``num_epochs``."""
  if config.num_train_steps > 0:
    return config.num_train_steps / steps_per_epoch
  return float(config.num_epochs)


def objective_and_schedule(stage: Stage, *, train_counts, steps_per_epoch: int):
  """The stage's training objective (``ltjax.losses``) and learning-rate schedule."""
  config = stage.config
  epochs = training_epochs(config, steps_per_epoch)
  objective = losses.build_objective(
      config.loss,
      train_counts,
      steps_per_epoch=steps_per_epoch,
      num_epochs=epochs,
      cc_sam_config=config.cc_sam,
      head=config.model.head,
  )
  schedule = optim.build_schedule(
      config.schedule, base_lr=config.optim.lr, steps_per_epoch=steps_per_epoch, num_epochs=epochs
  )
  return objective, schedule


def optimizer(stage: Stage, schedule, *, steps_per_epoch: int, initial_params=None):
  """The stage's whole optimiser (``ltjax.optim.build_optimizer`` with its trainable regex)."""
  return optim.build_optimizer(
      stage.config,
      schedule,
      steps_per_epoch=steps_per_epoch,
      trainable=stage.trainable,
      max_norm=stage.max_norm,
      max_norm_per_epoch=stage.max_norm_per_epoch,
      initial_params=initial_params,
  )


def stage2_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The full config of stage 2: stage 1's, with ``config.stage2``'s settings in place."""
  s2 = config.stage2
  c = ml_collections.ConfigDict(config.to_dict())
  c.loss, c.optim, c.schedule = (
      ml_collections.ConfigDict(s2.loss.to_dict()),
      ml_collections.ConfigDict(s2.optim.to_dict()),
      ml_collections.ConfigDict(s2.schedule.to_dict()),
  )
  c.num_epochs, c.num_train_steps = s2.num_epochs, -1
  c.eval_every_epochs = s2.eval_every_epochs
  c.batch_size = s2.batch_size or config.batch_size
  c.data.sampler, c.data.mixup_alpha = s2.sampler, s2.mixup_alpha
  c.data.augment = s2.augment or config.data.augment
  if s2.head not in ('keep', 'reinit'):
    c.model.head = s2.head
  c.stage2.num_epochs = 0
  c.trainable = ''  # Stage 2 trains stage2.trainable (Stage.trainable).
  c.sam.rho, c.sam.rho_values = 0.0, ()  # Stage 1's optimiser and flat loss only.
  c.cc_sam.flat_ratio = 0.0
  return c


def plan_stages(config: ml_collections.ConfigDict, workdir: str) -> list[Stage]:
  """Stage 1, plus stage 2 when ``config.stage2.num_epochs > 0``.

  Every name in the config that selects from a table, and every size and
  interval, of every stage, is checked first (``config_check``), before any
  data is loaded.
  """
  config_check.check_names(config)
  config_check.check_values(config)
  stages = [Stage(STAGE1, config, workdir)]
  if config.stage2.num_epochs > 0:
    stages.append(
        Stage(
            STAGE2,
            stage2_config(config),
            files.join(workdir, STAGE2),
            source=Source(workdir, config.stage2.init_from, config),
        )
    )
  return stages


def restore_variables(
    workdir: str, model, *, input_shape, which: str = 'best', step: int | None = None, sharding=None
) -> dict | None:
  """{'step', 'params', 'batch_stats'} of ``model`` from ``workdir``'s checkpoint.

  The optimiser state, whose structure depends on the recipe that wrote the
  checkpoint, is not read. ``sharding``: of the restored parameters and
  statistics (default: replicated over all devices). None when there is no such checkpoint.
  """
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, *input_shape)), train=False)
  )
  abstract = {'params': abstract['params'], 'batch_stats': abstract.get('batch_stats', {})}
  if sharding is not None:
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), abstract
    )
  checkpoints = Checkpoints(workdir)
  try:
    return checkpoints.restore_variables(abstract, which=which, step=step)
  finally:
    checkpoints.close()


def load_source(stage: Stage, *, num_classes: int, input_shape, sharding) -> dict:
  """The parameters and BatchNorm statistics of ``stage.source``'s checkpoint."""
  source = stage.source
  model = models.build_model(
      source.config.model, num_classes, dtype=models.DTYPES[source.config.dtype]
  )
  restored = restore_variables(
      source.workdir, model, input_shape=input_shape, which=source.which, sharding=sharding
  )
  if restored is None:
    raise FileNotFoundError(
        f'{stage.name} starts from the {source.which} checkpoint of '
        f'{source.workdir}, which has none; train stage 1 first.'
    )
  logging.info(
      '%s starts from %s (%s checkpoint, step %d) unless it resumes its own checkpoint.',
      stage.name,
      source.workdir,
      source.which,
      int(restored['step']),
  )
  return restored


# A stage that starts from another records what it started from: <workdir>/source.json.
SOURCE_FILE = 'source.json'


def source_record(stage: Stage, restored: dict) -> dict:
  """What ``stage`` starts from: its source's workdir, checkpoint, step and content digest.

  ``restored``: ``load_source``'s result. The digest (sha256 over every
  parameter and statistic, in path order) tells a retrained source apart from
  the one a finished stage started from, even at the same step.
  """
  digest = hashlib.sha256()
  for name, leaf in named_leaves(
      {'params': restored['params'], 'batch_stats': restored['batch_stats']}
  ):
    value = np.asarray(jax.device_get(leaf))
    digest.update(f'{name}:{value.dtype}:{value.shape};'.encode())
    digest.update(np.ascontiguousarray(value).tobytes())
  return {
      'workdir': stage.source.workdir,
      'which': stage.source.which,
      'step': int(restored['step']),
      'sha256': digest.hexdigest(),
  }


def source_changed(stage: Stage, record: dict) -> str | None:
  """Why ``stage``'s checkpoints were trained from another source than ``record`` (None: same).

  None too for a stage with no checkpoint yet, and for one written before
  stages recorded their source (nothing to compare; it resumes as it did).
  """
  path = files.join(stage.workdir, SOURCE_FILE)
  if not files.exists(path) or not files.exists(files.join(stage.workdir, 'checkpoints')):
    return None
  if not files.listdir(files.join(stage.workdir, 'checkpoints')):
    return None
  recorded = files.read_json(path)
  if (recorded['step'], recorded['sha256']) == (record['step'], record['sha256']):
    return None
  return (
      f'{stage.name} was trained from the {recorded["which"]} checkpoint of '
      f'{recorded["workdir"]} at step {recorded["step"]} (sha256 {recorded["sha256"][:12]}); '
      f'that checkpoint is now step {record["step"]} (sha256 {record["sha256"][:12]})'
  )


def set_aside(workdir: str) -> str:
  """Moves a stage's workdir to the next free ``<workdir>.<n>``; returns the new path.

  Finished work is kept, never deleted: a stage whose source changed starts
  over in a fresh directory beside it.
  """
  n = 1
  while files.exists(f'{workdir}.{n}'):
    n += 1
  target = f'{workdir}.{n}'
  if files.is_remote(workdir):  # A bucket has no rename: copy every object, then delete.
    files.copytree(workdir, target)
    epath.Path(workdir).rmtree()
  else:
    os.rename(workdir, target)
  return target


def merge_params(fresh, source, *, skip_prefix: str | None = None):
  """``fresh`` with every leaf whose path and shape also exist in ``source`` taken from it.

  A new head of another kind keeps the source's parameters where they match
  (e.g. LWS keeps the linear kernel and adds its scales); ``skip_prefix``
  ('head/' for cRT) keeps the fresh initialisation of a subtree.
  """
  source_leaves = dict(named_leaves(source))
  names = [name for name, _ in named_leaves(fresh)]
  leaves, treedef = jax.tree_util.tree_flatten(fresh)

  def pick(name, leaf):
    other = source_leaves.get(name)
    if other is None or other.shape != leaf.shape or (skip_prefix and name.startswith(skip_prefix)):
      return leaf
    return other

  return jax.tree_util.tree_unflatten(
      treedef, [pick(name, leaf) for name, leaf in zip(names, leaves)]
  )


def trains_head_only(stage: Stage, params) -> bool:
  """Whether only head parameters train (then no gradient needs to reach the backbone)."""
  if stage.trainable is None:
    return False
  return all(
      name.startswith('head/')
      for name, trains in named_leaves(path_mask(params, stage.trainable))
      if trains
  )
