#!/usr/bin/env bash
# ripcord beside make, ninja and Terraform on the same DAG: N steps (default 1,000) that each run
# `true`, in layers of 100, 1-2 needs each, two at a time (concurrency 2, make -j2, ninja -j2,
# terraform -parallelism=2). Rounds alternate the tools so that noise hits all alike; the table
# gives the median wall time and peak RSS of each, and the ratios to ripcord.
#
# ripcord runs twice: with the generated steps as they are (each start made durable with an
# fdatasync before the step runs, the crash-safety guarantee: the step's intent, synced while the
# steps before it run), and with `idempotent: true` (a step that is safe to run again needs no
# sync before it starts; its records ride on the next).
# make, ninja and Terraform keep no such record. A tool that is not installed is skipped.
#
#   bash benches/compare.sh [N] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
rounds=${2:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet
bin=$PWD/target/release/ripcord
python3 benches/gen-dag.py "$n" 100 "$work" 1 true 2
sed 's/^concurrency: 2$/concurrency: 2\ndefaults: { idempotent: true }/' "$work/dag.yaml" >"$work/idempotent.yaml"

have() { command -v "$1" >/dev/null 2>&1; }
tools=(ripcord ripcord-idempotent make)
have ninja && tools+=(ninja) || echo "ninja not installed: skipped (Debian: ninja-build)"
if have terraform; then
    # terraform_data is built in: init downloads nothing.
    if (cd "$work/terraform" && terraform init -input=false >/dev/null 2>&1); then
        tools+=(terraform)
    else
        echo "terraform init failed: skipped"
    fi
else
    echo "terraform not installed: skipped"
fi

# One run of a tool: "<wall ms> <peak RSS KB>" (GNU time's %M; without it, RSS is "-").
run_one() {
    local tool=$1 start end rss=- out="$work/time.out"
    local cmd
    case $tool in
        ripcord) rm -rf "$work/state"; cmd=("$bin" run --state-dir "$work/state" "$work/dag.yaml") ;;
        ripcord-idempotent) rm -rf "$work/state"; cmd=("$bin" run --state-dir "$work/state" "$work/idempotent.yaml") ;;
        make) cmd=(make -s -j2 -C "$work" -f "$work/Makefile") ;;
        ninja) cmd=(ninja -C "$work" -j2) ;;
        terraform)
            rm -f "$work/terraform/terraform.tfstate" "$work/terraform/terraform.tfstate.backup"
            cmd=(terraform -chdir="$work/terraform" apply -auto-approve -input=false -lock=false -parallelism=2) ;;
    esac
    # What the tool before wrote (Terraform's state file) is flushed first, outside the timing:
    # else its writeback lands in the next tool's run, and a cache flush there waits for it.
    sync
    start=$(date +%s%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%M' -o "$out" "${cmd[@]}" >/dev/null 2>&1
        rss=$(tail -1 "$out")
    else
        "${cmd[@]}" >/dev/null 2>&1
    fi
    end=$(date +%s%N)
    echo "$(( (end - start) / 1000000 )) $rss"
}

declare -A wall mem
for _ in $(seq "$rounds"); do
    for tool in "${tools[@]}"; do
        read -r ms kb < <(run_one "$tool")
        wall[$tool]+=" $ms"
        mem[$tool]+=" $kb"
    done
done

median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "$n steps of \`true\`, 2 at a time; median of $rounds alternating rounds"
printf '%-20s %10s %14s %18s %18s\n' tool "wall ms" "peak RSS MB" "ripcord / tool" "ripcord-idem / tool"
r=$(echo "${wall[ripcord]}" | median)
ri=$(echo "${wall[ripcord-idempotent]}" | median)
for tool in "${tools[@]}"; do
    w=$(echo "${wall[$tool]}" | median)
    m=$(echo "${mem[$tool]}" | median)
    [ "$m" = "-" ] || m=$(awk -v k="$m" 'BEGIN { printf "%.1f", k / 1024 }')
    awk -v t="$tool" -v w="$w" -v m="$m" -v r="$r" -v ri="$ri" \
        'BEGIN { printf "%-20s %10d %14s %18.2f %18.2f\n", t, w, m, r / w, ri / w }'
done
