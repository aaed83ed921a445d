#!/usr/bin/env bash
# The ResNet-32 and small-CNN CPU train steps against PyTorch eager on both ends, back to back in
# one run: `benchmarks/step_time.py --quick` in this machine's venv (Python 3.11: jaxlib 0.10) and
# in the newest end (scripts/newest.sh: Python 3.13, the newest jaxlib), each with ltjax's XLA:CPU
# compile options (`ltjax.train.steps.compiler_options`: YNNPACK for dots and reductions only) and
# with XLA's own choice (LTJAX_XLA_CPU_DEFAULTS=0), in ROUNDS interleaved rounds (A B A B ..., so
# a load drift hits every setting alike). PyTorch is the same release on both ends: the newest
# end gets this venv's torch version installed into it (from PyPI; several GB the first time).
#
#   bash benchmarks/step_time_two_ends.sh [VENV]      (default .venv; ROUNDS=5: 9 min on 2 cores)
#
# Writes benchmarks/results/step_time_two_ends.json: every run's rows (step_time.py's JSON, with
# the machine, load and compile options of that run) and a summary of median step times and
# ratios to PyTorch eager per end, setting and case.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
ROUNDS="${ROUNDS:-5}"
OUT="${OUT:-benchmarks/results/step_time_two_ends.json}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/step_time_two_ends.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

TORCH="$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
bash scripts/newest.sh python -c 'import jax' >/dev/null
if [ "$(bash scripts/newest.sh python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" != "$TORCH" ]; then
  echo "installing torch==$TORCH into the newest end (the same PyTorch on both ends)" >&2
  bash scripts/newest.sh python -m pip install -q "torch==$TORCH"
fi
# The newest end runs in a chroot that sees this checkout at the same path: its results land in
# a folder of the checkout, not in $TMP.
RUNS="$(pwd -P)/.newest/step_time_runs"
rm -rf "$RUNS"
mkdir -p "$RUNS"

for round in $(seq 1 "$ROUNDS"); do
  for end in jaxlib_host newest; do
    for options in ltjax xla_default; do
      label="${end}_${options}_r${round}"
      echo "== $label" >&2
      env_opts=()
      [ "$options" = xla_default ] && env_opts=(LTJAX_XLA_CPU_DEFAULTS=0)
      if [ "$end" = newest ]; then
        env "${env_opts[@]}" bash scripts/newest.sh \
          python benchmarks/step_time.py --quick --out "$RUNS/$label.json" >/dev/null
      else
        env "${env_opts[@]}" "$VENV/bin/python" benchmarks/step_time.py --quick \
          --out "$RUNS/$label.json" >/dev/null
      fi
    done
  done
done

"$VENV/bin/python" - "$RUNS" "$OUT" <<'EOF'
import collections, datetime, glob, json, os, statistics, sys
runs_dir, out = sys.argv[1:]
runs = {}
for path in sorted(glob.glob(os.path.join(runs_dir, '*.json'))):
  with open(path) as f:
    runs[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
summary = collections.defaultdict(lambda: collections.defaultdict(list))
for label, doc in runs.items():
  key = label.rsplit('_r', 1)[0]
  for row in doc['results']:
    if row['metric'] == 'step_time':
      case, impl = row['name'].split('/')
      summary[key][(case, impl)].append(row['value'])
table = []
for key, cases in sorted(summary.items()):
  for (case, impl), times in sorted(cases.items()):
    if impl != 'jax':
      continue
    torch_times = cases.get((case, 'torch'))
    ratios = [j / t for j, t in zip(times, torch_times)] if torch_times else None
    table.append({
        'end_and_options': key, 'case': case,
        'jax_ms_per_round': times, 'torch_eager_ms_per_round': torch_times,
        'jax_ms': statistics.median(times),
        'torch_eager_ms': statistics.median(torch_times) if torch_times else None,
        'ratio_per_round': [round(r, 3) for r in ratios] if ratios else None,
        'ratio': round(statistics.median(ratios), 3) if ratios else None,
    })
doc = {
    'benchmark': 'step_time_two_ends',
    'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    'command': 'bash benchmarks/step_time_two_ends.sh',
    'summary': table,
    'runs': runs,
}
with open(out, 'w') as f:
  json.dump(doc, f, indent=1)
  f.write('\n')
for r in table:
  print(f"{r['end_and_options']:24s} {r['case']:10s} jax {r['jax_ms']:7.1f} ms  torch "
        f"{r['torch_eager_ms'] or float('nan'):7.1f} ms  ratio {r['ratio'] or float('nan'):.2f}x"
        f"  (rounds: {', '.join(f'{x:.2f}' for x in r['ratio_per_round'] or [])})")
print(f'wrote {out}')
EOF
