#!/usr/bin/env bash
# Renders a run's HTML report in headless Chromium (Debian's `chromium` package) and writes a
# PNG, to look at what an auditor will see:
#
#   bash scripts/screenshot-report.sh RUN_ID report.png [--state-dir DIR]
set -euo pipefail
run_id=${1:?RUN_ID}
png=${2:?OUT.png}
shift 2
bin=${RIPCORD:-ripcord}
command -v chromium >/dev/null || { echo "needs chromium (apt-get install chromium)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" report "$run_id" --format html --output "$work/report.html" "$@"
# The flags keep Chromium off the network (this machine has none) and out of the user's profile.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$work/profile" --window-size=1150,1400 \
    --screenshot="$(realpath -m "$png")" "file://$work/report.html" 2>/dev/null
echo "wrote $png"
