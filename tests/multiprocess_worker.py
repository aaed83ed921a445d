"""One process of tests/test_multiprocess.py's two-process job (run as a script).

    python multiprocess_worker.py WORKDIR OUT_JSON

JAX_COORDINATOR_ADDRESS, LTJAX_NUM_PROCESSES and LTJAX_PROCESS_ID say which.
It trains 8 steps, resumes the same workdir to 12, and evaluates the result
(the workdir report), recording which workdir files this process opened for
writing (Python's audit hook: TensorStore's C++ writes of array data are not
seen, orbax's own per-process metadata is).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltjax.train import multihost  # pylint: disable=g-import-not-at-top

multihost.initialize(True)

import jax  # pylint: disable=g-import-not-at-top

from helpers import tiny_config  # pylint: disable=g-import-not-at-top
from ltjax import train  # pylint: disable=g-import-not-at-top
from ltjax.eval import report as eval_report  # pylint: disable=g-import-not-at-top
from ltjax.train import workdir_report  # pylint: disable=g-import-not-at-top

workdir, out = sys.argv[1], sys.argv[2]
opened_for_writing = set()


def audit(event, args):
  if event != 'open' or not isinstance(args[0], str) or not args[0].startswith(workdir):
    return
  mode, flags = args[1], args[2]
  writes = any(c in (mode or '') for c in 'wax+') or (
      isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
  )
  if writes:
    opened_for_writing.add(os.path.relpath(args[0], workdir))


sys.addaudithook(audit)
config = tiny_config(num_train_steps=8, checkpoint_every_steps=4, **{'schedule.name': 'constant'})
train.train_and_evaluate(config, workdir)
config.num_train_steps = 12
state, results = train.train_and_evaluate(config, workdir, resume_allow=('num_train_steps',))
report = workdir_report.report_for_workdir(workdir, sharpness_directions=0)
if jax.process_index() == 0:
  eval_report.write_report(report, os.path.join(workdir, 'report'))
with open(out, 'w') as f:
  json.dump(
      {
          'process_index': jax.process_index(),
          'process_count': jax.process_count(),
          'device_count': jax.device_count(),
          'step': int(state.step),
          'accuracy': float(results['accuracy']),
          'report_accuracy': float(report['accuracy']),
          'written': sorted(opened_for_writing),
      },
      f,
  )
