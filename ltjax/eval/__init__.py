"""Evaluation: metrics, tables, post-hoc adjustment, diagnostics, open-set, report and plots.

metrics       accuracy, balanced accuracy, many/medium/few, tables
posthoc       logit adjustment, tau-norm and friends with a validation search
diagnostics   the papers' explanatory quantities (LORT, EWB, NC, LWR, CC-SAM)
open_set      prototype scores and OLTR's F-measure
report        report.json, its plots and side-by-side comparisons
"""

from ltjax.eval import diagnostics
from ltjax.eval import open_set
from ltjax.eval import report
from ltjax.eval.metrics import classification_metrics
from ltjax.eval.metrics import format_table
