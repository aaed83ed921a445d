"""Losses, regularisers and their epoch schedules; the training objective.

Every loss is a pure function of ``(logits, labels, *, class statistics,
hyper-parameters)`` returning per-example losses or a reduction (see the
modules); class statistics are arguments, never state.

  cross_entropy.py   the softmax cross-entropy (PyTorch's conventions) the CE-based
                     losses share; WEIGHTED_REDUCTIONS, the normalisers of a
                     class-weighted mean
  focal.py, class_balanced.py, logit_adjusted.py, retargeting.py
                     the classification losses of the baselines and papers
  dot_regression.py  the dot-regression loss of a fixed (ETF) classifier, as EWB
  regularizers.py    feature-norm (FR) and logit weight repulsion (LWR)
  schedules.py       DRW / ADRW class weights, TLA, LWR's lambda(t)
  mixup.py           the lambda-mixture of a loss over a mixed batch's labels
  cc_sam.py          CC-SAM stage 1: the class-conditional flat loss
  adversarial.py     CC-SAM stage 2: class-conditional adversarial features
  objective.py       ``build_objective``: a config's training objective
"""

from ltjax.losses import cc_sam
from ltjax.losses import schedules
from ltjax.losses.adversarial import adversarial_feature_losses
from ltjax.losses.adversarial import adversarial_mix
from ltjax.losses.class_balanced import class_balanced_loss
from ltjax.losses.class_balanced import effective_number_weights
from ltjax.losses.cross_entropy import WEIGHTED_REDUCTIONS
from ltjax.losses.cross_entropy import softmax_cross_entropy
from ltjax.losses.dot_regression import dot_regression_loss
from ltjax.losses.focal import focal_loss
from ltjax.losses.logit_adjusted import balanced_softmax_loss
from ltjax.losses.logit_adjusted import ldam_loss
from ltjax.losses.logit_adjusted import ldam_margins
from ltjax.losses.logit_adjusted import log_prior
from ltjax.losses.logit_adjusted import logit_adjusted_loss
from ltjax.losses.logit_adjusted import vs_loss
from ltjax.losses.mixup import mixup_loss
from ltjax.losses.objective import CC_SAM_IMPLEMENTATIONS
from ltjax.losses.objective import LOSSES
from ltjax.losses.objective import SCHEDULES
from ltjax.losses.objective import build_objective
from ltjax.losses.objective import simple_objective
from ltjax.losses.regularizers import feature_norm_regularizer
from ltjax.losses.regularizers import lwr_regularizer
from ltjax.losses.retargeting import lort_loss
from ltjax.losses.schedules import adrw_weights
from ltjax.losses.schedules import drw_weights
from ltjax.losses.schedules import lwr_lambda
from ltjax.losses.schedules import tla_gamma
