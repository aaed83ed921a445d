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

from ltjax.configs import ce_imagenet_lt
from ltjax.configs import common
from ltjax.configs import provenance as p

ARGUMENTS = {}
PIPELINE = p.assumed('a from-scratch baseline of the data pipeline: no paper row')


def settings(args) -> p.Settings:
  del args
  s = common.large_scale_lt(p.Settings(), dataset='places_lt')
  common.large_scale_run(s)
  ce_imagenet_lt.decoupling_protocol(s)
  s.set('model.name', 'resnet152', ce_imagenet_lt.BALMS('config/Places_LT/balms.yaml'))
  s.set('batch_size', 256, PIPELINE)
  s.set('num_epochs', 30, PIPELINE)
  s.set('eval_every_epochs', 2, PIPELINE)
  s.set('optim.lr', 0.1, PIPELINE)
  s.set('optim.weight_decay', 5e-4, PIPELINE)
  return s


def get_config(arg=None):
  return settings(common.parse_arg(arg, **ARGUMENTS)).config()
