#!/usr/bin/env bash
# Benchmark: validate + plan of a generated layered DAG (default 10,000 steps), beside
# `make -n` on the same DAG (parse and resolve, run nothing). Prints medians and the ratio.
#
#   bash benches/plan.sh [N] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
runs=${2:-11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
bin=target/release/ripcord
python3 benches/gen-dag.py "$n" 100 "$work"

# Median wall time in ms of a command, over $runs runs, alternating with the other tools so
# that noise hits all of them alike.
declare -A samples
time_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

"$bin" validate "$work/dag.yaml" >/dev/null   # warm the page cache
for _ in $(seq "$runs"); do
    samples[validate]+=" $(time_ms "$bin" validate "$work/dag.yaml")"
    samples[plan]+=" $(time_ms "$bin" plan "$work/dag.yaml")"
    samples[make]+=" $(time_ms make -n -j2 -f "$work/Makefile" -C "$work")"
done
rss_kb=$( { /usr/bin/time -f '%M' "$bin" plan "$work/dag.yaml" >/dev/null; } 2>&1 | tail -1 )

v=$(echo "${samples[validate]}" | median)
p=$(echo "${samples[plan]}" | median)
m=$(echo "${samples[make]}" | median)
echo "steps: $n (layers of 100, 1-2 needs each), runs: $runs, median wall ms"
echo "ripcord validate:  ${v} ms"
echo "ripcord plan:      ${p} ms   (peak RSS $((rss_kb / 1024)) MB)"
echo "make -n -j2:       ${m} ms"
awk -v p="$p" -v m="$m" 'BEGIN { if (m > 0) printf "ratio plan/make-n: %.2f\n", p / m }'
