r"""Cross-entropy on ImageNet-LT with ResNeXt-50 (32x4d), the joint-training baseline.

Data: the OLTR/Decoupling split files (ImageNet_LT_{train,val,test}.txt;
115,846 / 20,000 / 50,000 images, 1000 classes) over the ILSVRC-2012 images.
Train RandomResizedCrop(224) + flip + ColorJitter(0.4, 0.4, 0.4); test
Resize(256) + CenterCrop(224). The validation list (20 per class) selects the
best checkpoint; the test list is reported.
Recipe (Decoupling / BALMS lineage, docs/references.md, 'Balanced Softmax'
and 'Decoupling'): batch 512, SGD lr 0.2,
momentum 0.9, wd 5e-4, cosine over 90 epochs. No number has been measured with
ltjax yet.

    python launch/train.py --config=configs/ce_imagenet_lt.py \
      --config.data.data_dir=/data/imagenet --config.data.list_dir=/data/ImageNet_LT \
      --workdir=runs/ce_imagenet_lt

Arguments: model (resnext50_32x4d, resnet50, resnet10).
"""

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, model='resnext50_32x4d')
  config = base.get_config()
  common.large_scale_lt(config, dataset='imagenet_lt')
  common.large_scale_run(config)
  config.model.name = args.model
  config.batch_size = 512
  config.num_epochs = 90
  config.optim.lr = 0.2
  config.optim.weight_decay = 5e-4
  config.schedule.name = 'cosine'
  return config
