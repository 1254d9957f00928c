#!/usr/bin/env bash
# Benchmark of the annotation engine (bench/annotation_bench.py) on a PostgreSQL database of its
# own, groundwork_bench: dropped and made again, migrated, measured, and dropped at the end unless
# BENCH_KEEP_DB=1. Figures: printed, and merged into var/bench/results.json. Extra arguments go to
# the benchmark (see `.venv/bin/python -m bench.annotation_bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379 REDIS_DB=11
BENCH_DB=groundwork_bench

if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
  echo "PostgreSQL is not answering; starting it..."
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  echo "Redis is not answering; starting it..."
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.5; done
fi

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
echo "== make bench took $(( $(date +%s) - started )) s"
