#!/usr/bin/env bash
# What users feel in a planned PostgreSQL switchover, ripcord beside Patroni, each on a
# two-node cluster on loopback behind its own HAProxy, one writer through HAProxy throughout:
# the longest gap between acknowledged writes, acknowledged writes lost, and how long until the
# old primary streams from the new one (see examples/switchover-bench.rs for the details).
#
# - ripcord: `ripcord run runbooks/postgres-dr.yaml --mode planned` (drain, clean shutdown of
#   the old primary over SSH, the standby replays its shutdown checkpoint, promote, HAProxy's
#   runtime API moves traffic, the old primary rejoins with pg_rewind), alternating a->b, b->a.
# - Patroni: `patronictl switchover --force`, Patroni in a venv made from /usr/bin/python3
#   (`pip install "patroni[etcd3]" psycopg2-binary`), Debian's etcd-server as its DCS, its
#   defaults (ttl 30, loop_wait 10, use_pg_rewind), HAProxy checking `OPTIONS /primary` on its
#   REST API with `inter 1s fall 2 rise 1 on-marked-down shutdown-sessions`.
#
# Needs PostgreSQL, HAProxy and openssh-server (scripts/test installs them) and etcd-server
# (installed here when missing, as root). The venv is made once under target/.
#
#   bash benches/switchover.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}

if ! command -v etcd >/dev/null; then
    echo "installing etcd-server (Debian)" >&2
    sudo_=; [ "$(id -u)" = 0 ] || sudo_=sudo
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >/dev/null
fi
venv=$PWD/target/bench-patroni
if [ ! -x "$venv/bin/patronictl" ] || [ "$(readlink -f "$venv/bin/python3")" != "$(readlink -f /usr/bin/python3)" ]; then
    echo "making a venv with Patroni in $venv (once)" >&2
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q "patroni[etcd3]" psycopg2-binary
fi
cargo build --release --quiet
cargo build --release --quiet --example switchover-bench
echo "ripcord $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $("$venv/bin/patroni" --version 2>&1 | head -1), $(etcd --version | head -1), $(haproxy -v | head -1 | cut -d' ' -f1-3), PostgreSQL $(ls /usr/lib/postgresql | sort -n | tail -1)"
target/release/examples/switchover-bench "$PWD/target/release/ripcord" "$venv" "$rounds"
