#!/usr/bin/env bash
# Run lint and the whole test suite against PostgreSQL, with a real Celery worker on Redis
# and Debian's Chromium for the browser tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_HOST=127.0.0.1 PG_PORT=5432 REDIS_PORT=6379

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

# The test database is test_groundwork, made and dropped by pytest-django; the user is
# the first of postgres/root that the server knows (trust auth on this machine).
PG_USER="${PG_USER:-postgres}"
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/groundwork}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:${REDIS_PORT}/15}"
export SECRET_KEY="test-only-not-secret"
export DEBUG=false
export SECURE_COOKIES=false
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$(mktemp -d -t groundwork-test-XXXXXX)}"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== pytest (database: ${DATABASE_URL}, broker: ${CELERY_BROKER_URL})"
exec .venv/bin/pytest "$@"
