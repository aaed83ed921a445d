r"""Cross-entropy on Places-LT with ResNet-152 (data pipeline and recipe shape).

Data: Places_LT_{train,val,test}.txt (62,500 / 7,300 / 36,500 images, 365
classes) over the Places365-Standard images; ImageNet mean/std; train
RandomResizedCrop(224) + flip + ColorJitter, test Resize(256) + CenterCrop(224).
The published Places-LT recipes start from an ImageNet-pretrained ResNet-152
(Decoupling, Balanced Softmax, CC-SAM Table 3; docs/references.md, 'Balanced
Softmax'). This config trains from scratch (a baseline for the pipeline); add
--config.model.pretrained=/path/resnet152.safetensors (or torchvision's .pth) and
--config.model.pretrained_head=skip to start from ImageNet weights.

    python launch/train.py --config=configs/ce_places_lt.py \
      --config.data.data_dir=/data/places365 --config.data.list_dir=/data/Places_LT \
      --workdir=runs/ce_places_lt
"""

from ltjax.configs import base
from ltjax.configs import common


def get_config(arg=None):
  del arg
  config = base.get_config()
  common.large_scale_lt(config, dataset='places_lt')
  config.model.name = 'resnet152'
  config.dtype = 'bfloat16'
  config.batch_size = 256
  config.eval_batch_size = 1000
  config.num_epochs = 30
  config.eval_every_epochs = 2
  config.log_every_steps = 100
  config.optim.lr = 0.1
  config.optim.weight_decay = 5e-4
  config.schedule.name = 'cosine'
  return config
