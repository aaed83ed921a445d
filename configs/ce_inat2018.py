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

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  del arg
  config = base.get_config()
  common.large_scale_lt(config, dataset='inat2018')
  common.large_scale_run(config)
  config.model.name = 'resnet50'
  config.batch_size = 256
  config.num_epochs = 90
  config.optim.lr = 0.1
  config.optim.weight_decay = 2e-4
  config.schedule.name = 'cosine'
  return config
