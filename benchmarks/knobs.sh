#!/usr/bin/env bash
# The knobs table of docs/performance.md ("Fused vs Keras BatchNormalization, and the other
# knobs"): one benchmarks/bench_ab.py comparison of benchmarks/bench.py settings a row, PAIRS
# pairs each (default 2), their JSON lines appended to $1 (default docs/bench/knobs.jsonl), then
# the table of medians (benchmarks/ab_table.py). About 30 minutes on 2 cores; run nothing else.
#
#   bash benchmarks/knobs.sh                       # from the repository root, tfresnet installed
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-docs/bench/knobs.jsonl}"
# --skip_recorded: run again after a kill, it measures only what is not in $OUT yet.
ab() { python -m benchmarks.bench_ab --pairs="${PAIRS:-2}" --json_out="$OUT" --skip_recorded "$@"; }
R20_FP32="--models=resnet20 --precisions=float32"
R20_BF16="--models=resnet20 --precisions=mixed_bfloat16"

ab --a=--bn=keras --b=--bn=fused --flags="$R20_FP32"                 # TF's fused BN kernel
ab --a=--bn=keras --b=--bn=fused --flags="$R20_BF16"
ab --a=--nojit_compile --b=--jit_compile --flags="$R20_FP32"         # XLA on a CPU
ab --a=--steps_per_execution=1 --b=--steps_per_execution=8 --flags="$R20_BF16"
ab --a= --b=TF_NUM_INTEROP_THREADS=1 --flags="$R20_BF16"              # inter-op threads 2 -> 1
ab --a= --b=TF_ONEDNN_THREADPOOL_USE_CALLER_THREAD=1 \
  --flags="--models=resnet56 --precisions=mixed_bfloat16"
ab --a= --b=TF_ENABLE_ONEDNN_OPTS=0 \
  --flags="$R20_BF16 --steps=4 --repeats=1 --steps_per_execution=1"  # oneDNN off: 30x slower
python -m benchmarks.ab_table "$OUT"
