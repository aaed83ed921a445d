r"""Cross-entropy on iNaturalist 2018 with ResNet-50.

Data: iNaturalist18_train.txt (437,513 images, 8,142 classes) and
iNaturalist18_val.txt (24,426, 3 per class) as the test split, over the
train_val2018 images; the iNat mean/std; train RandomResizedCrop(224) + flip
(no ColorJitter), test Resize(256) + CenterCrop(224).
Recipe (Saddle-LongTail's iNat setting, val-iisc/Saddle-LongTail, without
SAM/DRW; docs/references.md, 'Saddle-LongTail and SAM'):
batch 256, SGD lr 0.1, momentum 0.9, wd 2e-4, cosine over 90 epochs. No number
has been measured with ltjax yet.

    python launch/train.py --config=configs/ce_inat2018.py \
      --config.data.data_dir=/data/inat2018 --workdir=runs/ce_inat2018
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = {}
SADDLE = p.Repo('val-iisc/Saddle-LongTail', '48328fb')
RUN_SH = SADDLE('run.sh (iNaturalist18 SGD, the CE line without DRW)')
TRAIN = SADDLE('inat_train.py')


def settings(args) -> p.Settings:
  del args
  s = common.large_scale_lt(p.Settings(), dataset='inat2018')
  common.large_scale_run(s)
  s.set('seed', 0, RUN_SH)
  s.set('data.sampler', 'instance', TRAIN)
  s.set('data.mixup_alpha', 0.0, TRAIN)
  s.set('model.name', 'resnet50', RUN_SH)
  s.set('model.head', 'linear', SADDLE('models/resnet.py'))
  s.set('model.head_init', 'torch', SADDLE('models/resnet.py'))
  s.set('loss.name', 'cross_entropy', RUN_SH)
  s.set('loss.schedule', 'none', p.assumed('CE alone: the DRW of the run.sh line left out'))
  s.set('batch_size', 256, RUN_SH)
  s.set('num_epochs', 90, RUN_SH)
  s.set('eval_every_epochs', 1, TRAIN)
  s.set('eval.flip_tta', False, TRAIN)
  s.set('eval.groups', 'threshold', common.OLTR_GROUPS)
  s.set('optim.lr', 0.1, RUN_SH)
  s.set('optim.momentum', 0.9, TRAIN)
  s.set('optim.nesterov', False, TRAIN)
  s.set('optim.weight_decay', 2e-4, TRAIN)
  s.set('optim.weight_decay_mask', '.*', TRAIN)
  s.set('schedule.name', 'cosine', RUN_SH)  # --cos_lr.
  s.set('schedule.granularity', 'epoch', TRAIN)
  s.set('schedule.epoch_offset', 0, TRAIN)
  s.set('sam.rho', 0.0, TRAIN)
  s.set('cc_sam.flat_ratio', 0.0, TRAIN)
  s.set('stage2.num_epochs', 0, TRAIN)
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
