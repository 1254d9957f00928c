#!/usr/bin/env bash
# Run lint and the whole test suite against PostgreSQL, with a real Celery worker on Redis
# and Debian's Chromium for the browser tests; without arguments, first the annotation
# engine's tests on SQLite too. Extra arguments go to pytest (PostgreSQL run only).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/services-up.sh
source scripts/services-up.sh

# The test database is test_groundwork, made and dropped by pytest-django; the user is
# the first of postgres/root that the server knows (trust auth on this machine).
PG_USER="${PG_USER:-postgres}"
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/groundwork}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:${REDIS_PORT}/15}"
# Throttle counters in Redis, shared by the tests, the worker and the processes tests start;
# a Redis database of its own (each test clears the cache, which empties the whole database).
export CACHE_URL="${TEST_CACHE_URL:-redis://127.0.0.1:${REDIS_PORT}/14}"
export SECRET_KEY="test-only-not-secret"
export DEBUG=false
export SECURE_COOKIES=false
export ARTIFACTS_DIR="${ARTIFACTS_DIR:-$(mktemp -d -t groundwork-test-XXXXXX)}"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
if [ "$#" -eq 0 ]; then
  # make run's embedded database: the rating hot path and the consensus are hand-written SQL
  # that both must run.
  echo "== pytest on SQLite: the annotation engine's services, consensus, API and pages"
  DATABASE_URL="sqlite:///${ARTIFACTS_DIR}/test-sqlite.sqlite3" .venv/bin/pytest -q \
    tests/annotation/test_services.py tests/annotation/test_consensus.py tests/annotation/test_api.py \
    tests/annotation/test_views.py
fi
echo "== pytest (database: ${DATABASE_URL}, broker: ${CELERY_BROKER_URL}, cache: ${CACHE_URL})"
exec .venv/bin/pytest "$@"
