import os

from django.db import connection


def test_ci_runs_on_postgresql() -> None:
    """Under CI the suite must never fall back to SQLite unnoticed."""
    if os.environ.get("CI") == "true":
        assert connection.vendor == "postgresql", f"CI ran the tests on {connection.vendor}"
