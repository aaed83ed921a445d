"""Training: the explicit TrainState, jitted steps, the loop and checkpoints."""

from ltjax.train.checkpoint import Checkpoints
from ltjax.train.loop import evaluate
from ltjax.train.loop import train_and_evaluate
from ltjax.train.state import TrainState
from ltjax.train.state import create_train_state
from ltjax.train.steps import eval_step
from ltjax.train.steps import make_eval_step
from ltjax.train.steps import make_train_step
from ltjax.train.steps import train_step
