"""The source protocol's index rule, shared by the file-backed sources.

``source[i]`` accepts Python-style indices: negative ones count from the end,
anything outside ``[-len, len)`` is an IndexError. A source restricted by
``subset`` maps the position through its record numbers.
"""

import numpy as np


def record_number(index: int, length: int, subset: np.ndarray | None = None) -> int:
  """The stored record that position ``index`` of a ``length``-record source reads."""
  index = int(index)
  if not -length <= index < length:
    raise IndexError(f'Index {index} out of range for {length} records.')
  index %= length
  return index if subset is None else int(subset[index])
