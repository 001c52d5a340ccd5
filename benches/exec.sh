#!/usr/bin/env bash
# Benchmarks of the executor:
#  - dry-run of a generated 10,000-step DAG (hours of virtual time) — wall time;
#  - executor overhead per step: 10,000 no-op steps (assert.that: true, no process), real mode
#    with the durable journal, concurrency 10 — wall time / steps;
#  - 1,000 real `true` steps with concurrency 2 beside `make -j2` on the same DAG.
# Medians of alternating runs.
#
#   bash benches/exec.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --quiet
bin=$PWD/target/release/ripcord

python3 benches/gen-dag.py 10000 100 "$work/dry" 1 true 10
python3 benches/gen-dag.py 10000 100 "$work/noop" 1 noop 10
python3 benches/gen-dag.py 1000 100 "$work/true" 1 true 2

time_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

dry="" noop="" real="" make="" empty=""
for _ in $(seq "$runs"); do
    rm -rf "$work/state"
    dry+=" $(time_ms "$bin" run --dry-run --state-dir "$work/state" "$work/dry/dag.yaml")"
    noop+=" $(time_ms "$bin" run --state-dir "$work/state" "$work/noop/dag.yaml")"
    real+=" $(time_ms "$bin" run --state-dir "$work/state" "$work/true/dag.yaml")"
    make+=" $(time_ms make -s -j2 -f "$work/true/Makefile" -C "$work/true")"
    empty+=" $(time_ms "$bin" validate "$work/noop/dag.yaml")"
done
d=$(echo "$dry" | median); n=$(echo "$noop" | median); r=$(echo "$real" | median)
m=$(echo "$make" | median); e=$(echo "$empty" | median)
virtual=$("$bin" plan --json "$work/dry/dag.yaml" | python3 -c 'import json,sys; print(json.load(sys.stdin)["predicted_ms"]["limited"] // 1000)')
echo "runs: $runs, median wall ms"
echo "dry-run, 10,000 steps (${virtual}s of virtual time):  ${d} ms"
echo "no-op run, 10,000 steps, durable journal:       ${n} ms  (validate+plan alone: ${e} ms)"
awk -v n="$n" -v e="$e" 'BEGIN { printf "executor overhead per step:                      %.1f us\n", (n - e) * 1000 / 10000 }'
echo "1,000 x true, concurrency 2:  ripcord ${r} ms, make -j2 ${m} ms"
awk -v r="$r" -v m="$m" 'BEGIN { if (m > 0) printf "ratio ripcord/make:            %.2f\n", r / m }'
