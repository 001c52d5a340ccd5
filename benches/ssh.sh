#!/usr/bin/env bash
# ripcord's ssh.run beside Ansible and beside one `ssh` per step: N trivial remote commands
# (`true`) on one host, over SSH to a real sshd on loopback, F at a time (ripcord
# --concurrency F, ansible --forks F, xargs -P F). Each round starts cold (no connection
# left from an earlier one); rounds alternate the tools; the table gives median wall times,
# per command, and the ratios to ripcord.
#
# - ripcord: one runbook of N `ssh.run` steps (one master connection, N sessions on it; each
#   step's start made durable before it runs, as in a real run).
# - ansible: ansible-core in a venv (made once under target/), `ansible all -m command -a true`
#   over an inventory of N host names that all point at the server, with SSH pipelining on and
#   the Python interpreter given (Ansible's fastest settings; its ControlPersist connection
#   sharing is on by default).
# - ssh-per-step: `ssh host true` N times (a full connection and login each).
#
# The server runs as an unprivileged account (`ripcordssh`, made when run as root), like the
# tests' (tests/it/sshd.rs).
#
#   bash benches/ssh.sh [N] [F] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100}
forks=${2:-5}
rounds=${3:-3}
work=$(mktemp -d)
chmod 711 "$work"
sshd_pid=
cleanup() {
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
    pkill -f "ControlPath=$work" 2>/dev/null || true
    pkill -f "$work/ansible-cp" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
bin=$PWD/target/release/ripcord
venv=$PWD/target/bench-ansible
if [ ! -x "$venv/bin/ansible" ]; then
    echo "making a venv with ansible-core in $venv (once)" >&2
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q ansible-core
fi

# The server: its own host key, the client's key authorized, on a free port.
if [ "$(id -u)" -eq 0 ]; then
    user=ripcordssh
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /tmp --shell /bin/sh "$user"
    usermod -p '*' "$user"
else
    user=$(id -un)
fi
mkdir "$work/server"
ssh-keygen -q -t ed25519 -N "" -f "$work/server/host_key"
ssh-keygen -q -t ed25519 -N "" -f "$work/client_key"
cp "$work/client_key.pub" "$work/server/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/server/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $work/server/host_key
AuthorizedKeysFile $work/server/authorized_keys
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
MaxStartups 100
LogLevel ERROR
EOF
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/server/host_key.pub")" >"$work/known_hosts"
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$user" "$work/server"
    runuser -u "$user" -- /usr/sbin/sshd -D -e -f "$work/server/sshd_config" 2>"$work/sshd.log" &
else
    /usr/sbin/sshd -D -e -f "$work/server/sshd_config" 2>"$work/sshd.log" &
fi
sshd_pid=$!
for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
    sleep 0.05
done

ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$work/known_hosts"
    -i "$work/client_key" -p "$port" -l "$user")

# ripcord's runbook.
{
    echo "version: 1"
    echo "name: ssh-bench"
    echo "concurrency: $forks"
    echo "steps:"
    for i in $(seq "$n"); do
        echo "  - { id: s$i, uses: ssh.run, with: { host: 127.0.0.1, port: $port, user: $user, identity: $work/client_key, known_hosts: $work/known_hosts, argv: [\"true\"] } }"
    done
} >"$work/ssh.yaml"
"$bin" validate "$work/ssh.yaml" >/dev/null

# Ansible's inventory: N names for the one server.
{
    echo "[bench]"
    for i in $(seq "$n"); do
        echo "h$i ansible_host=127.0.0.1"
    done
    echo "[bench:vars]"
    echo "ansible_port=$port"
    echo "ansible_user=$user"
    echo "ansible_ssh_private_key_file=$work/client_key"
    echo "ansible_ssh_common_args='-o StrictHostKeyChecking=yes -o UserKnownHostsFile=$work/known_hosts'"
    echo "ansible_python_interpreter=/usr/bin/python3"
} >"$work/inventory.ini"

# An empty config: nothing from ~/.ansible.cfg or /etc/ansible changes what is measured.
: >"$work/ansible.cfg"

now_ms() { date +%s%3N; }

run_tool() {
    local tool=$1 round=$2 start end
    start=$(now_ms)
    case $tool in
        ripcord)
            "$bin" run "$work/ssh.yaml" --state-dir "$work/state-$round" >"$work/out" 2>&1
            ;;
        ansible)
            ANSIBLE_PIPELINING=True ANSIBLE_HOST_KEY_CHECKING=True ANSIBLE_FORKS=$forks \
                ANSIBLE_SSH_CONTROL_PATH_DIR="$work/ansible-cp-$round" ANSIBLE_LOCAL_TEMP="$work/ansible-tmp" \
                ANSIBLE_CONFIG="$work/ansible.cfg" \
                "$venv/bin/ansible" all -i "$work/inventory.ini" -m command -a true -o >"$work/out" 2>&1
            ;;
        ssh-per-step)
            seq "$n" | xargs -P "$forks" -I{} ssh "${ssh_opts[@]}" 127.0.0.1 true >"$work/out" 2>&1
            ;;
    esac || {
        echo "$tool failed:" >&2
        tail -n 20 "$work/out" >&2
        exit 1
    }
    end=$(now_ms)
    # Ansible's masters persist after it exits: end them, so the next round starts cold.
    pkill -f "$work/ansible-cp-$round" 2>/dev/null || true
    echo $((end - start))
}

tools=(ripcord ansible ssh-per-step)
declare -A times
for round in $(seq "$rounds"); do
    # Alternate the order: noise hits all alike.
    if [ $((round % 2)) -eq 0 ]; then
        order=(ssh-per-step ansible ripcord)
    else
        order=("${tools[@]}")
    fi
    for tool in "${order[@]}"; do
        times[$tool]+="$(run_tool "$tool" "$round") "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "$n remote \`true\` commands on one loopback sshd, $forks at a time, median of $rounds cold rounds"
printf '%-14s %10s %14s %10s\n' tool "wall ms" "ms/command" "× ripcord"
base=$(echo "${times[ripcord]}" | median)
for tool in "${tools[@]}"; do
    m=$(echo "${times[$tool]}" | median)
    awk -v t="$tool" -v m="$m" -v n="$n" -v b="$base" 'BEGIN { printf "%-14s %10d %14.2f %10.2f\n", t, m, m / n, m / b }'
done
