#!/usr/bin/env bash
# Start the platform: migrate, load the demo data, train the first model (once), run web + worker (Procfile via honcho),
# and print the URL and demo logins once /healthz answers. A process that dies is started again
# (scripts/respawn.py). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBUG="${DEBUG:-true}"
export PORT="${PORT:-8000}"
export HOST="${HOST:-127.0.0.1}"
PY=.venv/bin/python

$PY manage.py migrate --noinput
$PY manage.py collectstatic --noinput --verbosity 0
$PY manage.py load_demo
# The model the crowdworkers talk to: trained once on the demo dialogs (a few minutes on CPU),
# then loaded from var/models/ on every later start.
$PY manage.py train_first_model
logins="$($PY manage.py demo_logins)"

url="http://${HOST}:${PORT}"
# Announce once the platform answers, beside honcho's output.
(
  if $PY scripts/wait_healthy.py "$url/healthz" 120; then
    banner="================================================================
 Groundwork is up: $url/
 Admin: $url/admin/   API docs: $url/api/docs/   Health: $url/healthz
 Demo logins:
$logins
 Press Ctrl-C to stop the web server and the worker.
================================================================"
    printf '\n%s\n' "$banner"
  else
    echo "Groundwork did not answer on $url/healthz; see the log above." >&2
  fi
) &
.venv/bin/honcho start -f Procfile -p "$PORT" 2>&1 &
honcho=$!

descendants() {
  local child
  for child in $(pgrep -P "$1"); do
    echo "$child"
    descendants "$child"
  done
}
stop() {
  trap - INT TERM EXIT
  # honcho stops the web server and the worker itself, except when its output is gone (say
  # `make run | tee log` and Ctrl-C): then it is stuck, so every process started here is told.
  kill -TERM $(descendants $$) 2>/dev/null || true
  wait
}
trap 'stop; exit 130' INT TERM
trap stop EXIT
# A process that dies is started again by scripts/respawn.py (see the Procfile); one that keeps
# dying makes honcho stop the others, and then make run ends here, saying so.
if wait "$honcho"; then
  echo "Groundwork stopped."
else
  echo "Groundwork stopped: a process kept failing (its output is above); nothing is left running." >&2
  exit 1
fi
