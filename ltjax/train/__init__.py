"""Training: the explicit TrainState, jitted steps, stages, the loop and checkpoints.

state.py           TrainState and its sharded creation
steps.py           the jitted train and eval steps
stages.py          stage planning, the stage-2 config, loading the source stage
config_check.py    every table-selecting name of a config, checked up front
preflight.py       a stage's training step traced with abstract values (no compile)
loop.py            run_stage / train_and_evaluate
resume_check.py    a rerun resumes only the same run (config.json compared first)
workdir_lock.py    one writer per workdir
stopping.py        SIGTERM / SIGINT / preemption, time-based checkpoints, exit codes
predict.py         the one host-side loop over a jitted predict step
results.py         results.json: the record a finished run leaves (what studies aggregate)
wall_time.py       a stage's wall time summed over the processes that trained it
feature_cache.py   classifier re-training on features extracted once
checkpoint.py      orbax checkpoints (latest N and best) and config.json
final_adjustment.py  post-hoc logit adjustment of the final model, chosen on validation
workdir_report.py  a trained workdir -> its ltjax.eval report
retraining_study.py  LORT Table 1: many classifier re-training methods on one stage 1
writer.py          metrics.jsonl and TensorBoard
sharding.py        the ('data',) mesh and host <-> device batches
"""

from ltjax.train.checkpoint import Checkpoints
from ltjax.train.loop import run_stage
from ltjax.train.loop import train_and_evaluate
from ltjax.train.stages import Stage
from ltjax.train.stages import plan_stages
from ltjax.train.state import TrainState
from ltjax.train.state import create_train_state
from ltjax.train.steps import eval_step
from ltjax.train.steps import make_eval_step
from ltjax.train.steps import make_train_step
from ltjax.train.steps import train_step
