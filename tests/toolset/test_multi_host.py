"""Several hosts, as processes of their own on the test database: two gunicorn web hosts, each
with its own search index (``LOCAL_ARTIFACTS_DIR``), and an inference process reading model
versions from the shared ``ARTIFACTS_DIR``.

A document imported through one web host is found by a toolset search on the other; a change or
a deletion (made by a third process, this one) reaches both; a model version served after the
inference process started is the one it answers with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from groundwork.accounts import api_token_for
from groundwork.roles import Role
from tests.conftest import database_url
from tests.factories import UserFactory, dialog_with_turns
from tests.load.helpers import call, free_port, is_up, stop_group, wait_until
from toolset import services
from toolset.models import Document
from trainer.models import ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


def host_env(shared: Path, local: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "ARTIFACTS_DIR": str(shared),
        "LOCAL_ARTIFACTS_DIR": str(local),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CONN_MAX_AGE": "0",
        "DJANGO_SETTINGS_MODULE": "groundwork.settings",
    }


@contextmanager
def web_host(shared: Path, local: Path) -> Iterator[str]:
    """gunicorn with its own local folder; yields its base URL."""
    port = free_port()
    local.mkdir(parents=True)
    log = local / "gunicorn.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "groundwork.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
            ],
            cwd=ROOT,
            env=host_env(shared, local),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: is_up(base) or process.poll() is not None, 60, "gunicorn to answer")
        assert process.poll() is None, log.read_text()
        yield base
    finally:
        stop_group(process)


def first_found(base: str, token: str, query: str, session: str) -> list[str]:
    status, body = call(
        base, token, "POST", "/api/v1/toolset/query", {"query": query, "session": session, "tool": "search"}
    )
    assert status == 200, body
    return [result["title"] for result in body["results"]]


def test_documents_reach_every_web_hosts_search(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    token = api_token_for(user=UserFactory(role=Role.ADMIN))
    articles = [
        {
            "id": "1",
            "url": "https://example.org/okapi",
            "title": "Okapi",
            "text": "The okapi lives in the Congo.",
        },
        {"id": "2", "url": "https://example.org/quokka", "title": "Quokka", "text": "The quokka smiles."},
    ]
    with web_host(shared, tmp_path / "a") as a, web_host(shared, tmp_path / "b") as b:
        assert first_found(b, token, "okapi", "before") == []  # b's index: built empty, marked
        status, body = call(a, token, "POST", "/api/v1/toolset/documents", articles)
        assert status == 201, body

        assert first_found(b, token, "okapi Congo", "b1") == ["Okapi"]
        assert first_found(a, token, "quokka", "a1") == ["Quokka"]

        # Changed through b, deleted elsewhere (this process: an admin on a third host).
        changed = {**articles[0], "text": "The okapi is the giraffe's closest relative."}
        status, body = call(b, token, "POST", "/api/v1/toolset/documents", [changed])
        assert (status, body) == (201, {"created": 0, "updated": 1, "unchanged": 0})
        services.documents_delete(documents=Document.objects.filter(title="Quokka"))
        for name, host in {"a": a, "b": b}.items():
            assert first_found(host, token, "giraffe relative", f"{name}2") == ["Okapi"]
            assert first_found(host, token, "Congo", f"{name}2") == []
            assert first_found(host, token, "quokka", f"{name}2") == []

    # Each host wrote its own index; nothing under the shared folder.
    assert (tmp_path / "a" / "search.mark").is_file()
    assert (tmp_path / "b" / "search.mark").is_file()
    assert not (shared / "search").exists()


# A second inference host: it answers a dialog (trainer.inference.respond, what the inference
# task runs) for each dialog id read from stdin and prints the version that answered.
INFERENCE_HOST = """
import json, sys
import django
django.setup()
from trainer import inference
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    try:
        turn = inference.respond(dialog_id=int(line))
        print(json.dumps({"model_version": turn.model_version}), flush=True)
    except Exception as error:
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
"""


class InferenceHost:
    def __init__(self, shared: Path, local: Path) -> None:
        local.mkdir(parents=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", INFERENCE_HOST],
            cwd=ROOT,
            env=host_env(shared, local),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(local / "inference.log").open("w"),
            text=True,
            start_new_session=True,
        )
        assert self.read() == {"ready": True}

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the inference host exited"
        return json.loads(line)

    def respond(self, dialog_id: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{dialog_id}\n")
        self.process.stdin.flush()
        return self.read()


def test_a_version_served_after_an_inference_host_started_is_the_one_it_answers_with(
    settings: Any, tmp_path: Path
) -> None:
    from tests.trainer.helpers import tiny_model
    from trainer.services import requests

    shared = settings.ARTIFACTS_DIR = tmp_path / "shared"
    first = tiny_model()  # trained here, its files in the shared folder; serving
    host = InferenceHost(shared, tmp_path / "inference")
    try:
        dialog = dialog_with_turns(["What do you think about tea?"], external_id="hosts-1", purpose="quality")
        assert host.respond(dialog.pk) == {"model_version": first.name}

        # A new version written as a training job writes one (whole, then renamed), then served.
        staging = shared / "models" / ".hosts-second.partial"
        shutil.copytree(first.path, staging)
        os.replace(staging, shared / "models" / "hosts-second")
        second = ModelVersion.objects.create(
            name="hosts-second",
            parent=first,
            directory="models/hosts-second",
            tokenizer_sha256=first.tokenizer_sha256,
        )
        requests.model_serve(model=second)
        shutil.rmtree(first.path)  # the host answers from the new folder, not from the first one

        dialog = dialog_with_turns(["Do you like rain?"], external_id="hosts-2", purpose="quality")
        assert host.respond(dialog.pk) == {"model_version": "hosts-second"}

        # A version whose files this host cannot see is refused, naming the folder and the setting.
        requests.model_serve(model=first)
        dialog = dialog_with_turns(["And snow?"], external_id="hosts-3", purpose="quality")
        error = host.respond(dialog.pk)["error"]
        assert error.startswith(
            f"FileNotFoundError: model version {first.name}: no model files in {first.path}"
        )
        assert "ARTIFACTS_DIR must be storage" in error
    finally:
        stop_group(host.process)
