#!/usr/bin/env bash
# Benchmarks: the annotation engine (bench/annotation_bench.py) on a PostgreSQL database of its
# own, groundwork_bench: dropped and made again, migrated, measured, and dropped at the end unless
# BENCH_KEEP_DB=1; then, with no database, search (bench/toolset_bench.py), training and dataset
# export (bench/trainer_bench.py) and sample-and-rank (bench/inference_bench.py); then, on the
# database again, the evaluation report (bench/evaluation_report_bench.py) and evaluating a model
# version batched vs one context at a time (bench/evaluation_bench.py), and a campaign aggregated
# with Dawid–Skene vs the majority vote (bench/raters_bench.py), and the preference-data export
# (bench/preference_bench.py); and, with no database, the ratings saved by stopping once the
# answer is decided, replayed on FED and ConvAbuse (bench/decided_bench.py). Figures: printed, and
# merged into var/bench/results.json. Extra arguments go to every benchmark (`--parts` picks among
# next, submit, aggregate, search, train, export, ddp, inference, report, evaluate, raters,
# preference, decided, first_model; see each module's `--help`). make run's first model:
# bench/first_model_bench.py. BENCH_DB (a name ending in _bench) and BENCH_REDIS_DB choose another
# database and Redis database than groundwork_bench and 11, so that two runs do not share them.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services-up.sh
source scripts/services-up.sh
REDIS_DB="${BENCH_REDIS_DB:-11}"
BENCH_DB="${BENCH_DB:-groundwork_bench}"
case "$BENCH_DB" in
  *_bench) ;;
  *) echo "BENCH_DB must end in _bench (it is dropped and made again): ${BENCH_DB}" >&2; exit 2 ;;
esac

PG_USER="${PG_USER:-postgres}"
export DATABASE_URL="postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${BENCH_DB}"
export CELERY_BROKER_URL="redis://127.0.0.1:${REDIS_PORT}/${REDIS_DB}"
export SECRET_KEY=bench
export DEBUG=false
export ALLOWED_HOSTS=127.0.0.1,localhost
export SECURE_COOKIES=false
export LOG_LEVEL="${LOG_LEVEL:-WARNING}"

pg() { psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "$1"; }
cleanup() {
  # Submissions queue consensus tasks that no worker runs here: forget them.
  redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP_DB:-0}" = 1 ]; then
    echo "== kept database ${BENCH_DB} (BENCH_KEEP_DB=1)"
  else
    pg "DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)" && echo "== dropped database ${BENCH_DB}"
  fi
}

started=$(date +%s)
echo "== database ${BENCH_DB}: drop if exists, create, migrate"
pg "DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)" 2>/dev/null
pg "CREATE DATABASE ${BENCH_DB}"
trap cleanup EXIT
redis-cli -p "$REDIS_PORT" -n "$REDIS_DB" flushdb >/dev/null
.venv/bin/python manage.py migrate --noinput --verbosity 0
echo "== benchmark (broker: ${CELERY_BROKER_URL})"
.venv/bin/python -m bench.annotation_bench "$@"
# Full-text search (no database): runs unless --parts leaves out "search"; ignores the other arguments.
.venv/bin/python -m bench.toolset_bench "$@"
# Trainer (no database): "train" (vs GPT-2, and MFU of ours and the small preset), "export" and "ddp"
# (2 gloo processes vs 1) unless --parts leaves them out; ignores the rest.
.venv/bin/python -m bench.trainer_bench "$@"
# Sample-and-rank (no database): "inference" (scoring with the cache vs re-encoding, one turn).
.venv/bin/python -m bench.inference_bench "$@"
# The evaluation report: "report" (its core without a database, then the page on this database).
.venv/bin/python -m bench.evaluation_report_bench "$@"
# Evaluating a model version (the bench database): "evaluate", batched vs one context at a time.
.venv/bin/python -m bench.evaluation_bench "$@"
# Labels that know their raters (the bench database): "raters", Dawid–Skene vs the majority vote.
.venv/bin/python -m bench.raters_bench "$@"
# Preference data (the bench database): "preference", pairs by source, rows/s and memory of the
# build at N and 4N, vs a quality_safety export of the same ratings; the files load with datasets.
.venv/bin/python -m bench.preference_bench "$@"
# Stopping once the answer is decided (no database): "decided", ratings saved on FED and ConvAbuse.
.venv/bin/python -m bench.decided_bench "$@"
# make run's first model (the bench database): "first_model", trained as make run trains it, with
# its held-out response ranking (Hits@1 of 20) and validation loss.
.venv/bin/python -m bench.first_model_bench "$@"
echo "== make bench took $(( $(date +%s) - started )) s"
