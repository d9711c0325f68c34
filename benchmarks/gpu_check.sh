#!/usr/bin/env bash
# The CUDA paths that CPU-only CI never runs, as one prepared script for a lent GPU.
#
#   bash benchmarks/gpu_check.sh          # on a CUDA machine: about 10 minutes on one GPU
#   bash benchmarks/gpu_check.sh --dry    # anywhere: each part's wiring, on the CPU, in seconds
#
#   PARTS="selfcheck train"                   # only these parts (default: all)
#   TRAIN_ARGS="--max-seconds 90 --data F"    # passed on to bench_train_gpu.py
#
# Parts: doctor (isolation with the GPU's device nodes bound in), selfcheck on CUDA
# (references full marks, skeletons zero), the corpus's correct entries and its
# REQUIRES: cuda entries on CUDA, the device-parametrised tests of tests/, and the
# reference GPU training run against nanoGPT. Every part prints one summary line:
#   PART <name>: ok|FAILED (<seconds> s)  <its last output line>
# and the script exits 1 if any part failed. Logs go to $LOG_DIR (default: a temp folder).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
LOG_DIR="${LOG_DIR:-$(mktemp -d -t llmgrade-gpu-check-XXXXXX)}"
mkdir -p "$LOG_DIR"
PY="${PYTHON:-python}"

if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device here: run with --dry to check the script's wiring on the CPU" >&2
    exit 2
fi

PARTS="${PARTS:-doctor selfcheck devices corpus train}"
failed=0
part() {  # part NAME SUMMARY_REGEX COMMAND...  (runs it, logs it, prints one summary line)
    local name="$1" summary="$2"; shift 2
    [[ " $PARTS " == *" $name "* ]] || return 0
    local log="$LOG_DIR/$name.log" start=$SECONDS rc
    "$@" >"$log" 2>&1
    rc=$?
    local last   # the lines matching SUMMARY_REGEX (rich tables' borders dropped), joined
    last="$(grep -E "$summary" "$log" | tr -d '│┃' | tr -s ' ' | sed 's/^ //; s/ $//' | paste -sd ';' | cut -c1-200)"
    if [[ $rc == 0 ]]; then
        printf 'PART %-10s ok     (%4d s)  %s\n' "$name" $((SECONDS - start)) "$last"
    else
        printf 'PART %-10s FAILED (%4d s)  rc %d, log %s: %s\n' "$name" $((SECONDS - start)) "$rc" "$log" "$last"
        failed=1
    fi
}

corpus_on_cuda() {  # the correct entries, one stage per process in parallel, then REQUIRES: cuda
    local dir rc=0 stage
    dir="$(mktemp -d)"
    for stage in $(ls tests/corpus); do
        "$PY" -m grader.course.corpus --kind correct --stage "$stage" --device cuda >"$dir/$stage.log" 2>&1 &
    done
    wait
    for stage in $(ls tests/corpus); do cat "$dir/$stage.log"; done
    grep -qE "^FAIL|Traceback" "$dir"/*.log && rc=1
    "$PY" -m grader.course.corpus --requires cuda --device cuda || rc=1
    return $rc
}

LEVEL="isolation level"
STAGES="│ (ok|FAIL|[A-Za-z_]+ +│ [0-9])"       # selfcheck's table rows
BEHAVE="entries behave"
PASSED="passed|failed|error"
if [[ $DRY == 1 ]]; then
    # The same commands on the CPU, each at its smallest: proves the script is wired right.
    part doctor    "$LEVEL" "$PY" -m grader doctor
    part selfcheck "$STAGES" "$PY" -m grader selfcheck --stage embeddings --device cpu
    part corpus    "$BEHAVE" "$PY" -m grader.course.corpus --kind correct --stage embeddings --device cpu
    part devices   "$PASSED" "$PY" -m pytest -q -p no:cacheprovider -n 0 tests/test_checks.py -k "device or tolerance"
    part train     "usage" "$PY" benchmarks/bench_train_gpu.py --help
else
    part doctor    "$LEVEL" "$PY" -m grader doctor
    part selfcheck "$STAGES" "$PY" -m grader selfcheck --device cuda
    part corpus    "$BEHAVE|^FAIL" corpus_on_cuda
    # every device-parametrised test of the suite, on its CUDA side (ids hold "cuda")
    part devices   "$PASSED" "$PY" -m pytest -q -p no:cacheprovider tests -k cuda -m "not slow"
    part train     "val|loss|seconds|PASS|NOT YET" "$PY" benchmarks/bench_train_gpu.py ${TRAIN_ARGS:---max-seconds 150}
fi
echo "logs: $LOG_DIR"
exit $failed
