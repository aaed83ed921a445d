r"""Cross-entropy on ImageNet-LT with ResNeXt-50 (32x4d), the joint-training baseline.

Data: the OLTR/Decoupling split files (ImageNet_LT_{train,val,test}.txt;
115,846 / 20,000 / 50,000 images, 1000 classes) over the ILSVRC-2012 images.
Train RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4, 0.4); test
Resize(256) + CenterCrop(224). The validation list (20 per class) selects the
best checkpoint; the test list is reported.
Recipe (Decoupling / BALMS lineage, official config jiawei-ren/
BalancedMetaSoftmax-Classification config/ImageNet_LT/feat_uniform.yaml;
docs/references.md, 'Balanced Softmax' and 'Decoupling'): batch 512, SGD lr
0.2, momentum 0.9, wd 5e-4, cosine over 90 epochs stepped at each epoch start,
evaluated on the validation list every epoch. No number has been measured with
ltjax yet.

    python launch/train.py --config=configs/ce_imagenet_lt.py \
      --config.data.data_dir=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
      --workdir=runs/ce_imagenet_lt

Arguments: model (resnext50_32x4d, resnet50, resnet10).
"""

from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = dict(model=('resnext50_32x4d', 'resnet50', 'resnet10'))
BALMS = p.Repo('jiawei-ren/BalancedMetaSoftmax-Classification', '34a61e4')
CONFIG = BALMS('config/ImageNet_LT/feat_uniform.yaml')
RUN = BALMS('run_networks.py train')


def decoupling_protocol(s: p.Settings) -> p.Settings:
  """Joint CE training of the Decoupling / BALMS code, with its schedule and model selection."""
  s.set('seed', 0, p.assumed('the config sets no seed'))
  s.set('data.sampler', 'instance', CONFIG)  # sampler: null.
  s.set('data.mixup_alpha', 0.0, CONFIG)
  s.set('model.head', 'linear', CONFIG)  # DotProductClassifier.
  s.set('model.head_init', 'torch', BALMS('models/DotProductClassifier.py'))
  s.set('loss.name', 'cross_entropy', CONFIG)  # SoftmaxLoss.
  s.set('loss.schedule', 'none', CONFIG)
  s.set('eval_every_epochs', 1, RUN)  # Evaluates on val every epoch, keeps the best.
  s.set('eval.flip_tta', False, RUN)
  s.set('eval.groups', 'threshold', common.OLTR_GROUPS)
  s.set('optim.momentum', 0.9, CONFIG)
  s.set('optim.nesterov', False, CONFIG)
  s.set('optim.weight_decay_mask', '.*', CONFIG)
  s.set('schedule.name', 'cosine', CONFIG)  # coslr, endlr 0.
  s.set('schedule.granularity', 'epoch', RUN)
  s.set('schedule.epoch_offset', 1, RUN)  # scheduler.step() at the start of each epoch.
  s.set('sam.rho', 0.0, CONFIG)
  s.set('cc_sam.flat_ratio', 0.0, CONFIG)
  s.set('stage2.num_epochs', 0, CONFIG)
  return s


def settings(args) -> p.Settings:
  s = common.large_scale_lt(p.Settings(), dataset='imagenet_lt')
  common.large_scale_run(s)
  model = CONFIG if args.model == 'resnext50_32x4d' else p.assumed('another backbone, same recipe')
  s.set('model.name', args.model, model)
  s.set('batch_size', 512, CONFIG)
  s.set('num_epochs', 90, CONFIG)
  s.set('optim.lr', 0.2, CONFIG)
  s.set('optim.weight_decay', 5e-4, CONFIG)
  return decoupling_protocol(s)


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
