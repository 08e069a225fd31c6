#!/usr/bin/env bash
# The demo, start to finish: set up (venv, dependencies, LiveKit stack), start a
# local-provider agent worker, run campaigns/demo.yaml against the sipp phones (one
# contact per phone behaviour), print where the workbook is, and stop what it started.
#
#   ./scripts/demo.sh
#
# A stack that was already running is reused and left running. Each demo run gets a
# fresh ledger under .devstack/ (set DEMO_DATABASE_URL to use another).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

if [[ ! -x .venv/bin/python ]]; then
    say "creating .venv"
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import campaign.dialer, agent, devstack, pocketsphinx, psycopg" 2>/dev/null; then
    say "installing dependencies"
    .venv/bin/pip install -q -c constraints.txt -e '.[dev,postgres,local,bench]'
fi

was_up=$(.venv/bin/python -m devstack status 2>/dev/null | awk '$2 == "up" {print $1}' || true)
started_parts=()
worker_pid=""
cleanup() {
    status=$?
    if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
        say "stopping the agent worker"
        kill -TERM "$worker_pid" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$worker_pid" 2>/dev/null || true
    fi
    if ((${#started_parts[@]})); then
        say "stopping the devstack parts this demo started: ${started_parts[*]}"
        .venv/bin/python -m devstack down "${started_parts[@]}" || true
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting the devstack (LiveKit server, SIP, Redis, sipp phones)"
.venv/bin/python -m devstack up >/dev/null
for part in $(.venv/bin/python -m devstack status | awk '$2 == "up" {print $1}'); do
    grep -qx "$part" <<<"$was_up" || started_parts+=("$part")
done
set -a
# shellcheck disable=SC1091
. .devstack/env
set +a

export DIALER_DATABASE_URL="${DEMO_DATABASE_URL:-sqlite:///.devstack/demo-$(date +%Y%m%d-%H%M%S).db}"
export AGENT_NAME="demo-agent-$$"
export AGENT_PROVIDERS=local
# Load = calls in progress / 10, not the machine's CPU: the demo shares 2 cores with the whole stack.
export AGENT_MAX_CALLS="${AGENT_MAX_CALLS:-10}"

say "starting the agent worker ($AGENT_NAME, local providers)"
log=.devstack/logs/demo-agent-$$.log
mkdir -p "$(dirname "$log")"
.venv/bin/python -m agent start >"$log" 2>&1 &
worker_pid=$!
for _ in $(seq 1 240); do
    grep -q "Agent is ready" "$log" 2>/dev/null && break
    kill -0 "$worker_pid" 2>/dev/null || { echo "the agent worker exited; see $log" >&2; exit 1; }
    sleep 0.25
done
grep -q "Agent is ready" "$log" || { echo "the agent worker is not ready after 60 s; see $log" >&2; exit 1; }

say "running campaigns/demo.yaml"
.venv/bin/dialer run campaigns/demo.yaml --max-wait 2m

workbook=$(ls -t metrics_reports/demo-*.xlsx 2>/dev/null | head -n 1 || true)
say "done. ledger: $DIALER_DATABASE_URL"
[[ -n "$workbook" ]] && say "workbook: $workbook"
