"""Evaluation: metrics, tables and plots."""

from ltjax.eval.metrics import classification_metrics
from ltjax.eval.metrics import format_table
