"""Shared fixtures: real PostgreSQL (pytest-django), a real Celery worker, Debian's Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from groundwork.roles import Role
from tests.factories import UserFactory

# live_server runs Django in a thread while Playwright's sync API runs an event loop.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
QUEUES = "default,inference"  # training has its own worker (training_worker)
# The node names of the Celery workers this session started (``_worker``).
_RUNNING_WORKERS: list[str] = []


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium, never a browser that Playwright downloads."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture
def users(db: None) -> dict[Role, Any]:
    """One user per role."""
    return {role: UserFactory(role=role) for role in Role}


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


def database_url() -> str:
    """The URL of the database the tests run on (the test database pytest-django made), for
    processes the tests start (a worker, a management command)."""
    db = connection.settings_dict
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the real worker shares the test database, which needs PostgreSQL")
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def _worker(
    name: str, queues: str, pool_args: list[str], django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[subprocess.Popen]:
    """Run a real ``celery worker`` process on the configured broker, on the test database."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("set CELERY_BROKER_URL to a Redis URL to run worker tests (make test does)")
    from groundwork.celery import app

    with django_db_blocker.unblock():
        url = database_url()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        # The same artifacts folder as the tests: datasets and models are found by relative path.
        "ARTIFACTS_DIR": str(settings.ARTIFACTS_DIR),
        "CONN_MAX_AGE": "0",
    }
    app.control.purge()
    log = tmp_path_factory.mktemp("worker") / f"{name}.log"
    node = f"{name}-{os.getpid()}@%h"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "groundwork", "worker", "-Q", queues, *pool_args),
                *("-l", "info", "--without-gossip", "--without-mingle", "-n", node),
            ],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            expected = node.replace("%h", socket.gethostname())
            while expected not in {n for reply in app.control.ping(timeout=0.5) for n in reply}:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Celery worker {name} did not start:\n{log.read_text()}")
            process.log = log  # type: ignore[attr-defined]
            _RUNNING_WORKERS.append(expected)
            yield process
        finally:
            if expected in _RUNNING_WORKERS:
                _RUNNING_WORKERS.remove(expected)
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: Any) -> Iterator[None]:
    """A real ``celery worker`` process (queues default and inference), sharing the test database.

    Tests using it must be ``django_db(transaction=True)``: the worker sees only committed rows.
    """
    yield from (
        None for _ in _worker("test", QUEUES, ["--pool", "solo"], django_db_blocker, tmp_path_factory)
    )


@pytest.fixture(scope="session")
def training_worker(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: Any
) -> Iterator[subprocess.Popen]:
    """A real worker on queue ``training``, prefork with one child as in production: killing the
    child (kill -9) is a worker process dying mid-job, and the parent starts a new child."""
    yield from _worker(
        "training",
        "training",
        ["--pool", "prefork", "--concurrency", "1"],
        django_db_blocker,
        tmp_path_factory,
    )


def _wait_for_idle_workers(timeout: float = 30) -> None:
    """Until the session's workers run nothing and their queues are empty: a task a test queued
    (an item's consensus after a submission) must not run into the next test's database flush,
    which then deadlocks with it."""
    from groundwork.celery import app

    deadline = time.monotonic() + timeout
    with app.connection_for_read() as broker:
        client = broker.default_channel.client  # Redis: the worker tests run on Redis only
        while time.monotonic() < deadline:
            waiting = sum(client.llen(queue) for queue in ("celery", *QUEUES.split(","), "training"))
            inspect = app.control.inspect(destination=_RUNNING_WORKERS, timeout=1)
            busy = [
                tasks for reply in (inspect.active(), inspect.reserved()) for tasks in (reply or {}).values()
            ]
            if not waiting and not any(busy):
                return
            time.sleep(0.05)


@pytest.fixture(autouse=True)
def _workers_idle_after_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test whose rows a worker may still be reading (``transaction=True``), wait for the
    session's workers to be idle before its database is flushed (set up after the database, so
    torn down before it)."""
    marker = request.node.get_closest_marker("django_db")
    transactional = marker is not None and bool(marker.kwargs.get("transaction"))
    if transactional:
        request.getfixturevalue("transactional_db")
    yield
    if transactional and _RUNNING_WORKERS:
        _wait_for_idle_workers()


@pytest.fixture(autouse=True)
def _fresh_cache(request: pytest.FixtureRequest) -> None:
    """Throttle counters live in the cache; each test starts with none.

    The cache is shared between processes: Redis under make test (CACHE_URL, a Redis database
    of its own, which clear() empties), else a table of the test database, which only a test
    using the database can reach (and only such a test can count a throttle).
    """
    from django.core.cache import cache, caches
    from django.core.cache.backends.db import DatabaseCache

    if isinstance(caches["default"], DatabaseCache) and request.node.get_closest_marker("django_db") is None:
        used = [name for name in ("transactional_db", "live_server", "db") if name in request.fixturenames]
        if not used:
            return
        request.getfixturevalue(used[0])
    cache.clear()


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing() -> Iterator[None]:
    """PBKDF2 is slow on purpose; tests make hundreds of users."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield
