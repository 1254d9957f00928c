import json
import os
import pathlib

import pytest

from groundwork.accounts import demo_logins_ensure

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_umask_no_chmod(monkeypatch):
    """umask 0 and chmod a no-op: a file then has the mode it was created with, nothing else."""
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    monkeypatch.setattr(pathlib.Path, "chmod", lambda *args, **kwargs: None)
    old = os.umask(0)
    yield
    os.umask(old)


def test_the_demo_logins_file_is_private_from_its_first_byte(settings, tmp_path, no_umask_no_chmod) -> None:
    settings.ARTIFACTS_DIR = tmp_path

    logins = demo_logins_ensure()

    path = tmp_path / "demo-logins.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {login.role: login.password for login in logins}
    assert [p.name for p in tmp_path.iterdir()] == ["demo-logins.json"]  # no temporary left


def test_demo_logins_keep_their_passwords_and_an_old_readable_file_becomes_private(
    settings, tmp_path
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    first = demo_logins_ensure()
    path = tmp_path / "demo-logins.json"
    path.chmod(0o644)  # as an earlier version may have left it

    again = demo_logins_ensure()

    assert again == first
    assert path.stat().st_mode & 0o777 == 0o600
