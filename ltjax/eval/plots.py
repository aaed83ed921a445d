"""Plots of evaluation results.

Figures are ``matplotlib.figure.Figure`` objects saved straight to files, never
pyplot: no display is needed and a notebook's own backend (inline plots) is
left alone.
"""

from matplotlib import figure
import numpy as np

from ltjax import files


def plot_per_class_accuracy(
    per_class_accuracy, train_counts, path: str, *, title: str = '', class_names=None
) -> None:
  """Accuracy of each class against its training count (log x axis)."""
  acc = 100 * np.asarray(per_class_accuracy, float)
  counts = np.asarray(train_counts)
  fig = figure.Figure(figsize=(6, 4), dpi=120)
  ax = fig.subplots()
  ax.scatter(counts, acc, s=30, zorder=3)
  if class_names is not None and len(counts) <= 20:
    for n, a, name in zip(counts, acc, class_names):
      ax.annotate(name, (n, a), fontsize=7, xytext=(3, 3), textcoords='offset points')
  ax.set_xscale('log')
  ax.set_xlabel('training samples of the class')
  ax.set_ylabel('test accuracy (%)')
  ax.set_ylim(-2, 102)
  ax.axvline(20, color='grey', ls=':', lw=1)
  ax.axvline(100, color='grey', ls=':', lw=1)
  ax.set_title(title or 'Per-class accuracy vs. training count')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  files.save_figure(fig, path)
