#!/usr/bin/env bash
# Shared state in PostgreSQL beside the local directory, and both beside make.
#
#  - 1,000 `true` steps, 2 at a time (benches/gen-dag.py), steps as generated (a durable start
#    each) and `idempotent: true`: ripcord with `--state-dir` (local directory), ripcord with
#    `--state postgres://` on a local server, and `make -j2` on the same DAG;
#  - journal records/s into PostgreSQL: 10,000 no-op steps (`assert.that`, no process),
#    10 at a time, with `--state postgres://`: records written / wall time.
#
# The server is a fresh PostgreSQL cluster on loopback with its default durability (fsync on,
# synchronous_commit on): a commit is on disk when ripcord hears of it, as a journal's
# fdatasync is. Rounds alternate the variants; medians.
#
#   bash benches/shared.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
work=$(mktemp -d)
chmod 755 "$work"
bin_dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg=()
if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    id ripcordpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin ripcordpg
    as_pg=(runuser -u ripcordpg --)
    mkdir -p "$work/pg" && chown ripcordpg "$work/pg"
else
    mkdir -p "$work/pg"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    "${as_pg[@]}" "$bin_dir/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin_dir/initdb" -D "$work/pg/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\n" "$port" "$work/pg" \
    >>"$work/pg/data/postgresql.conf"
"${as_pg[@]}" "$bin_dir/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w start >/dev/null
url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
psql_() { "$bin_dir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -Atqc "$1"; }

cargo build --release --quiet
bin=$PWD/target/release/ripcord
python3 benches/gen-dag.py 1000 100 "$work" 1 true 2
sed 's/^concurrency: 2$/concurrency: 2\ndefaults: { idempotent: true }/' "$work/dag.yaml" >"$work/idempotent.yaml"
python3 benches/gen-dag.py 10000 100 "$work/noop" 1 noop 10
# The schema, once, outside the timings.
"$bin" runs --state "$url" >/dev/null

time_ms() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
median() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A wall
variants=(dir dir-idempotent pg pg-idempotent make)
records=""
for _ in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
        rm -rf "$work/state"
        case $v in
            dir) ms=$(time_ms "$bin" run --state-dir "$work/state" "$work/dag.yaml") ;;
            dir-idempotent) ms=$(time_ms "$bin" run --state-dir "$work/state" "$work/idempotent.yaml") ;;
            pg) ms=$(time_ms "$bin" run --state "$url" "$work/dag.yaml") ;;
            pg-idempotent) ms=$(time_ms "$bin" run --state "$url" "$work/idempotent.yaml") ;;
            make) ms=$(time_ms make -s -j2 -C "$work" -f "$work/Makefile") ;;
        esac
        wall[$v]+=" $ms"
    done
    before=$(psql_ "SELECT count(*) FROM ripcord_records")
    ms=$(time_ms "$bin" run --state "$url" "$work/noop/dag.yaml")
    after=$(psql_ "SELECT count(*) FROM ripcord_records")
    records+=" $(( (after - before) * 1000 / ms ))"
done

m=$(echo "${wall[make]}" | median)
d=$(echo "${wall[dir]}" | median)
echo
echo "1,000 steps of \`true\`, 2 at a time; median of $rounds alternating rounds ($(psql_ 'SHOW server_version'), fsync on)"
printf '%-34s %8s %10s %12s\n' variant "wall ms" "/ make" "/ same, dir"
for v in "${variants[@]}"; do
    w=$(echo "${wall[$v]}" | median)
    case $v in
        pg) base=$(echo "${wall[dir]}" | median) ;;
        pg-idempotent) base=$(echo "${wall[dir-idempotent]}" | median) ;;
        *) base=$w ;;
    esac
    awk -v v="$v" -v w="$w" -v m="$m" -v b="$base" 'BEGIN { printf "%-34s %8d %10.2f %12.2f\n", v, w, w / m, w / b }'
done
echo "journal records/s into PostgreSQL (10,000 no-op steps, 10 at a time): $(echo "$records" | median)"
