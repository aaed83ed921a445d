"""One process of tests/test_multiprocess.py's two-process job (run as a script).

    python multiprocess_worker.py train|eval WORKDIR OUT_JSON [flags of the command...]

runs ``python -m ltjax.train`` or ``python -m ltjax.eval`` (their ``run()``,
with the flags given, ``--multihost`` among them) in this process and records
its exit code, which process it was, and which workdir files it opened for
writing (Python's audit hook: orbax's own metadata files are seen, TensorStore's
C++ writes of array data are not). JAX_COORDINATOR_ADDRESS, LTJAX_NUM_PROCESSES
and LTJAX_PROCESS_ID say which process of the job this is.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

mode, workdir, out, command_flags = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
opened_for_writing = set()


def audit(event, args):
  if event != 'open' or not isinstance(args[0], str) or not args[0].startswith(workdir):
    return
  mode_, flags = args[1], args[2]
  writes = any(c in (mode_ or '') for c in 'wax+') or (
      isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR)
  )
  if writes:
    opened_for_writing.add(os.path.relpath(args[0], workdir))


sys.addaudithook(audit)
if mode == 'train':
  from ltjax.train import __main__ as command  # pylint: disable=g-import-not-at-top
else:
  from ltjax.eval import __main__ as command  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top

sys.argv = [command.__file__, *command_flags]
try:
  command.run()
  code = 0
except SystemExit as e:
  code = 0 if e.code is None else e.code  # absl exits with None on success.
with open(out, 'w') as f:
  json.dump(
      {
          'exit_code': code,
          'process_index': jax.process_index(),
          'process_count': jax.process_count(),
          'device_count': jax.device_count(),
          'written': sorted(opened_for_writing),
      },
      f,
  )
