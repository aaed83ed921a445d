"""Long-tailed data: profiles, in-memory sources and deterministic batching."""

from ltjax.data.datasets import ArrayDataset
from ltjax.data.datasets import RelabeledSource
from ltjax.data.datasets import Splits
from ltjax.data.datasets import check_readable
from ltjax.data.datasets import load_datasets
from ltjax.data.datasets import load_split
from ltjax.data.datasets import open_class_map
from ltjax.data.datasets import relabel
from ltjax.data.longtail import class_groups
from ltjax.data.longtail import hold_out_indices
from ltjax.data.longtail import long_tail_counts
from ltjax.data.longtail import long_tail_indices
from ltjax.data.pipeline import AUGMENTATIONS
from ltjax.data.pipeline import TrainBatches
from ltjax.data.pipeline import eval_batches
