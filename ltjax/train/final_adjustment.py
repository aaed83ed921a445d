"""Post-hoc logit adjustment of a finished run, chosen on the validation split.

EWB's one-stage method (Hasegawa & Sato, ICLR 2024, Sec. 5 and App. 7.3)
trains with weight decay, feature regularisation and a fixed ETF classifier,
then multiplies the logits by pi_c^-gamma; post-hoc LA (Menon et al., ICLR
2021) subtracts tau log pi_c; tau-normalisation (Kang et al., ICLR 2020)
divides each class vector by |w_c|^tau, tau chosen on validation as
Decoupling does. ``config.posthoc.method`` applies one of them
(``ltjax.eval.posthoc``) to the final model of a run:

  1. the validation split's logits choose gamma or tau over ``posthoc.grid``
     by balanced accuracy (the test split is never looked at);
  2. the chosen value adjusts the test logits;
  3. the adjusted test metrics are printed beside the unadjusted ones and
     recorded: a 'test_posthoc' row in metrics.jsonl and posthoc.json (method,
     value, the validation curve and both tables).
"""

import jax
import ml_collections
import numpy as np

from ltjax import files
from ltjax.eval import metrics as eval_metrics
from ltjax.eval import posthoc
from ltjax.train import predict
from ltjax.train.state import TrainState
from ltjax.train.steps import affine_head

METHODS = ('none', 'additive', 'multiplicative', 'normalized_multiplicative', 'tau_norm')
# Methods that rescale the class vectors: they need the affine head's kernel (and bias).
_NEED_HEAD = ('normalized_multiplicative', 'tau_norm')
POSTHOC_FILE = 'posthoc.json'


def check_validation_split(config: ml_collections.ConfigDict, has_val: bool) -> None:
  """The adjustment is chosen on validation data: fail before training when there is none."""
  if config.posthoc.method != 'none' and not has_val:
    raise ValueError(
        f'posthoc.method={config.posthoc.method!r} chooses its value on a validation split, '
        f'and data.name={config.data.name!r} has none here: set data.val_per_class > 0 '
        "(images held out of training per class), or posthoc.method='none'."
    )


def _adjust(method: str, logits, counts, value, head):
  if method == 'additive':
    return posthoc.additive_adjust(logits, counts, value)
  if method == 'multiplicative':
    return posthoc.multiplicative_adjust(logits, counts, value)
  kernel, bias = head
  if method == 'tau_norm':
    return posthoc.tau_norm_adjust(logits, kernel, bias, value)
  return posthoc.normalized_multiplicative_adjust(logits, kernel, counts, value)


def choose_and_apply(
    method: str, val: dict, test: dict, train_counts: np.ndarray, *, grid=(), head=None
) -> tuple[float, dict, np.ndarray]:
  """(value chosen on ``val``, its validation curve, the adjusted test logits).

  ``val`` and ``test``: {'logits': (N, C), 'label': (N,)}. Only ``val`` decides.
  ``head``: (kernel (d, C), bias (C,) or None) of the affine head, for the
  methods that rescale class vectors.
  """
  if method not in METHODS[1:]:
    raise ValueError(f'Unknown posthoc.method {method!r}; valid: {list(METHODS)}.')
  grid = tuple(grid) or posthoc.DEFAULT_GRID
  adjusted = lambda logits, value: _adjust(method, logits, train_counts, value, head)
  best, curve = posthoc.search_grid(
      lambda value: adjusted(val['logits'], value), val['label'], grid, len(train_counts)
  )
  return best, curve, adjusted(test['logits'], best)


def adjust_final_model(
    config: ml_collections.ConfigDict,
    state: TrainState,
    eval_step,
    *,
    eval_splits: dict,
    train_counts: np.ndarray,
    mesh,
    workdir: str,
    write=None,
) -> dict:
  """Chooses and applies ``config.posthoc``; returns {method, value, curve, metrics}."""
  image_size = config.eval.image_size if config.eval.image_size > 0 else None

  def outputs(split):
    batches = predict.image_batches(
        eval_splits[split], batch_size=config.eval_batch_size, image_size=image_size
    )
    return predict.predict(state, eval_step, batches, mesh=mesh)

  val, test = outputs('val'), outputs('test')
  head = None
  if config.posthoc.method in _NEED_HEAD:
    head = affine_head(state, test['features'].shape[-1])
    if head is None:
      raise ValueError(
          f'posthoc.method={config.posthoc.method!r} rescales the class vectors of an affine '
          f'head; model.head={config.model.head!r} is not affine.'
      )
  value, curve, adjusted = choose_and_apply(
      config.posthoc.method, val, test, train_counts, grid=config.posthoc.grid, head=head
  )
  metrics = eval_metrics.classification_metrics(
      np.argmax(adjusted, -1),
      test['label'],
      train_counts,
      **eval_metrics.group_options(config.eval),
  )
  result = {'method': config.posthoc.method, 'value': value, 'curve': curve, 'metrics': metrics}
  if jax.process_index() == 0:
    files.write_json(
        files.join(workdir, POSTHOC_FILE),
        {**result, 'curve': {str(k): v for k, v in curve.items()}},
        indent=2,
        default=lambda x: x.tolist() if hasattr(x, 'tolist') else float(x),
    )
  if write is not None:  # MetricWriter.write with the step bound.
    write(
        split='test_posthoc',
        posthoc_method=config.posthoc.method,
        posthoc_value=value,
        **metrics,
    )
  return result
