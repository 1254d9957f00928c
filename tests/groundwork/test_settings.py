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


def run_python(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repository with only ``env`` (and PATH, HOME, LANG) set."""
    clean = {k: v for k, v in os.environ.items() if k in KEPT}
    clean |= {"DJANGO_SETTINGS_MODULE": "groundwork.settings", "ARTIFACTS_DIR": str(tmp_path)} | env
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=clean, capture_output=True, text=True, check=False
    )


def probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_python(tmp_path, "-c", PROBE, **env)


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


SECURITY_PROBE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({'cache': settings.CACHES['default'], "
    "'num_proxies': settings.REST_FRAMEWORK.get('NUM_PROXIES'), "
    "'axes_client_ip': settings.AXES_CLIENT_IP_CALLABLE, "
    "'proxy_ssl_header': getattr(settings, 'SECURE_PROXY_SSL_HEADER', None), "
    "'hsts': settings.SECURE_HSTS_SECONDS, 'ssl_redirect': settings.SECURE_SSL_REDIRECT}))"
)


def security_probe(tmp_path: Path, **env: str) -> dict:
    result = run_python(tmp_path, "-c", SECURITY_PROBE, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_embedded_default_cache_is_the_database_every_process_shares(tmp_path: Path) -> None:
    values = security_probe(tmp_path, DEBUG="true")

    assert values["cache"]["BACKEND"] == "django.core.cache.backends.db.DatabaseCache"


def test_cache_url_puts_the_cache_in_redis(tmp_path: Path) -> None:
    values = security_probe(tmp_path, DEBUG="true", CACHE_URL="redis://127.0.0.1:6379/14")

    assert values["cache"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert values["cache"]["LOCATION"] == "redis://127.0.0.1:6379/14"


def test_this_test_run_counts_throttles_in_a_cache_shared_between_processes() -> None:
    """make test sets CACHE_URL (Redis); without it the database cache is used. Never a cache
    of one process (LocMemCache), which let every gunicorn worker count on its own."""
    from django.conf import settings

    backend = settings.CACHES["default"]["BACKEND"]
    assert backend in (
        "django.core.cache.backends.redis.RedisCache",
        "django.core.cache.backends.db.DatabaseCache",
    )
    if os.environ.get("CACHE_URL", "").startswith("redis://"):
        assert backend == "django.core.cache.backends.redis.RedisCache"


def test_without_trusted_proxies_forwarded_headers_are_ignored(tmp_path: Path) -> None:
    values = security_probe(tmp_path, DEBUG="true")

    assert values["num_proxies"] == 0
    assert values["axes_client_ip"] == "groundwork.views.client_ip"
    assert values["proxy_ssl_header"] is None


def test_trusted_proxies_is_the_one_setting_drf_axes_and_https_detection_follow(tmp_path: Path) -> None:
    values = security_probe(tmp_path, DEBUG="true", TRUSTED_PROXIES="2")

    assert values["num_proxies"] == 2
    assert values["axes_client_ip"] == "groundwork.views.client_ip"
    assert values["proxy_ssl_header"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_https_settings_follow_secure_cookies(tmp_path: Path) -> None:
    production = security_probe(tmp_path, SECRET_KEY="k" * 60, ALLOWED_HOSTS="example.com")
    plain_http = security_probe(tmp_path, SECRET_KEY="k" * 60, SECURE_COOKIES="false")

    assert production["hsts"] == 31_536_000
    assert production["ssl_redirect"] is True
    assert plain_http["hsts"] == 0
    assert plain_http["ssl_redirect"] is False


def test_the_generated_secret_key_is_private_from_its_first_byte(tmp_path: Path) -> None:
    """With umask 0 and chmod made a no-op, only the mode the file was created with is left."""
    code = (
        "import os, pathlib; os.umask(0); "
        "os.chmod = pathlib.Path.chmod = lambda *a, **k: None; "
        "import django; django.setup()"
    )
    result = run_python(tmp_path, "-c", code, DEBUG="true")

    assert result.returncode == 0, result.stderr
    key = tmp_path / "secret_key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(key.read_text().strip()) > 40
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_manage_py_check_deploy_is_clean_with_production_settings(tmp_path: Path) -> None:
    result = run_python(
        tmp_path,
        *("manage.py", "check", "--deploy", "--fail-level", "WARNING"),
        DEBUG="false",
        SECRET_KEY="a-real-production-key-" + "x7Gq2pL9vR4sT8wY1zB6nC3mD5fH0jK" * 2,
        ALLOWED_HOSTS="groundwork.example",
    )

    assert result.returncode == 0, result.stdout + result.stderr
