"""Settings come from the environment only; check them in fresh interpreters."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'engine': settings.DATABASES['default']['ENGINE'], "
    "'name': str(settings.DATABASES['default']['NAME']), 'broker': settings.CELERY_BROKER_URL, "
    "'hosts': settings.ALLOWED_HOSTS, 'artifacts': str(settings.ARTIFACTS_DIR)}))"
)
KEPT = ("PATH", "HOME", "LANG")


def probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k in KEPT}
    clean |= {"DJANGO_SETTINGS_MODULE": "groundwork.settings", "ARTIFACTS_DIR": str(tmp_path)} | env
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True, check=False
    )


def test_defaults_are_embedded_sqlite_and_filesystem_broker_under_artifacts_dir(tmp_path: Path) -> None:
    result = probe(tmp_path, DEBUG="true")

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(tmp_path / "groundwork.sqlite3")
    assert values["broker"] == "filesystem://"
    assert values["artifacts"] == str(tmp_path)
    # The generated development key is kept, so sessions survive a restart.
    assert (tmp_path / "secret_key").stat().st_size > 40


def test_database_and_broker_urls_switch_to_postgresql_and_redis(tmp_path: Path) -> None:
    result = probe(
        tmp_path,
        DEBUG="true",
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/somewhere",
        CELERY_BROKER_URL="redis://127.0.0.1:6379/3",
        ALLOWED_HOSTS="groundwork.example,api.groundwork.example",
    )

    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["engine"] == "django.db.backends.postgresql"
    assert values["name"] == "somewhere"
    assert values["broker"] == "redis://127.0.0.1:6379/3"
    assert values["hosts"] == ["groundwork.example", "api.groundwork.example"]


def test_secret_key_is_required_with_a_database_server_when_debug_is_off(tmp_path: Path) -> None:
    result = probe(tmp_path, DEBUG="false", DATABASE_URL="postgres://postgres@127.0.0.1:5432/somewhere")

    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "secret_key").exists()


def test_the_embedded_default_needs_no_secret_key_even_with_debug_off(tmp_path: Path) -> None:
    """`manage.py` beside `make run` (which sets DEBUG) uses make run's generated key."""
    with_debug = probe(tmp_path, DEBUG="true")
    without = probe(tmp_path)

    assert with_debug.returncode == 0, with_debug.stderr
    assert without.returncode == 0, without.stderr
    assert json.loads(without.stdout)["engine"] == "django.db.backends.sqlite3"
