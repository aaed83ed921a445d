"""Parameter groups by path regex: frozen parameters and per-group optimisers.

PyTorch code builds param groups (``optimizer = SGD([{'params': ...}, ...])``)
or sets ``requires_grad = False``; in optax both are ``multi_transform`` over
labels computed from the '/'-joined parameter paths (``backbone/...``,
``head/kernel``, ``head/bias``). A group's optimiser sees only its own leaves,
so its state (momentum buffers) is allocated for them only, and a frozen
parameter gets exactly zero updates -- no weight decay either, which in
PyTorch also needs the parameter left out of the optimiser, not just
``requires_grad = False`` with a zero gradient.

Weight balancing's stage 2 trains only the classifier:
``freeze(torch_sgd(...), r'head/.*')``.
"""

import re
from typing import Sequence

import jax
import optax

from ltjax.param_paths import path_str

_DEFAULT = 'default'


def per_group(
    groups: Sequence[tuple[str, optax.GradientTransformation]],
    *,
    default: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  """A different optimiser per group of parameters, chosen by path regex.

  Args:
    groups: (regex, transform) pairs; a parameter belongs to the first group
      whose regex fully matches its '/'-joined path.
    default: the transform for parameters that match no regex; None makes an
      unmatched parameter an error (at ``init``), naming it. A regex that
      matches no parameter is an error too.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (``optax.multi_transform``)
    whose groups only hold state for their own parameters. Extra arguments are
    passed to every group unchanged, so wrap SAM around it, not inside it.
  """
  groups = [(re.compile(regex), tx) for regex, tx in groups]
  if not groups:
    raise ValueError('per_group needs at least one (regex, transform) pair.')
  for pattern, tx in groups:
    if not isinstance(tx, optax.GradientTransformation):
      raise TypeError(f'Group {pattern.pattern!r}: expected an optax transform, got {type(tx)}.')
  transforms = {f'group{i}': tx for i, (_, tx) in enumerate(groups)}
  if default is not None:
    transforms[_DEFAULT] = default

  def label(path, _):
    name = path_str(path)
    for i, (pattern, _) in enumerate(groups):
      if pattern.fullmatch(name):
        return f'group{i}'
    if default is None:
      raise ValueError(
          f'Parameter {name!r} matches no group regex '
          f'{[p.pattern for p, _ in groups]} and there is no default.'
      )
    return _DEFAULT

  def labels(params):
    return jax.tree_util.tree_map_with_path(label, params)

  inner = optax.multi_transform(transforms, labels)

  def init_fn(params):
    # A group that selects nothing is almost always a misspelt regex.
    used = set(jax.tree.leaves(labels(params)))
    for i, (pattern, _) in enumerate(groups):
      if f'group{i}' not in used:
        raise ValueError(f'Group regex {pattern.pattern!r} matches no parameter path.')
    return inner.init(params)

  return optax.GradientTransformationExtraArgs(init_fn, inner.update)


def freeze(
    tx: optax.GradientTransformation, trainable_regex: str
) -> optax.GradientTransformationExtraArgs:
  """Applies ``tx`` to parameters whose path fully matches ``trainable_regex``.

  Every other parameter gets zero updates (``optax.set_to_zero``) and no
  optimiser state, so it does not move -- weight decay included.

  Args:
    tx: the optimiser of the trainable parameters, e.g. ``torch_sgd``.
    trainable_regex: regex over '/'-joined parameter paths, e.g. r'head/.*'.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  return per_group([(trainable_regex, tx)], default=optax.set_to_zero())
