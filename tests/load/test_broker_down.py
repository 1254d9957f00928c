"""With the broker stopped for real, work that cannot be queued is refused with a JSON 503 and
leaves no row behind; a rating is still stored; once the broker is back, work queues again.

The web server is gunicorn on the test database, its broker a Redis server of this module's own,
which the tests stop and start (the suite's Redis is shared with the rest of the tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from annotation.models import Judgment
from annotation.services.assignments import assignment_lease_next
from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from dialogs.models import DialogExport, Turn
from groundwork.accounts import api_token_for
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.conftest import database_url
from tests.factories import UserFactory
from tests.load.helpers import call, free_port, is_up, stop_group, wait_until
from toolset.models import Document
from trainer.models import DatasetVersion, Evaluation, ModelVersion, TrainingJob

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
DOWN = "The task queue is down"


@dataclass
class Broker:
    port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self.answers, 20, "the test's Redis to start")

    def stop(self) -> None:
        assert self.process is not None
        stop_group(self.process)
        wait_until(lambda: not self.answers(), 20, "the test's Redis to stop")

    def answers(self) -> bool:
        done = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() == "PONG"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(port=free_port(), folder=tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        if broker.process is not None:
            stop_group(broker.process)


@pytest.fixture
def server(broker: Broker, django_db_blocker: Any, tmp_path: Path) -> Iterator[str]:
    """gunicorn on the test database, queueing on ``broker``."""
    with django_db_blocker.unblock():
        url = database_url()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CELERY_BROKER_URL": broker.url,
        "ARTIFACTS_DIR": str(settings.ARTIFACTS_DIR),
        "ALLOWED_HOSTS": "127.0.0.1",
        "CONN_MAX_AGE": "0",
    }
    log = tmp_path / "gunicorn.log"
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
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: is_up(base), 60, f"gunicorn to answer:\n{log.read_text()}")
        yield base
    finally:
        stop_group(process)


def tokens() -> dict[Role, str]:
    return {role: api_token_for(user=UserFactory(role=role)) for role in Role}


def test_work_that_cannot_be_queued_is_refused_and_leaves_nothing(server: str, broker: Broker) -> None:
    token = tokens()
    status, chat = call(server, token[Role.CROWDWORKER], "POST", "/api/v1/chats/", {"purpose": "quality"})
    assert status == 201, chat
    ready = DatasetVersion.objects.create(kind="pretrain", status="ready", tokenizer_sha256="t" * 64)
    ModelVersion.objects.create(name="down-model", directory="models/down", tokenizer_sha256="t" * 64)
    contexts = [{"id": "c1", "purpose": "quality", "context": [{"speaker": "user", "text": "Hello"}]}]
    evaluation_set = evaluation_set_import(name="down", records=parse_objects(contexts)).evaluation_set
    broker.stop()

    assert call(server, None, "GET", "/healthz")[0] == 503
    refused = {
        "dataset": call(server, token[Role.RESEARCHER], "POST", "/api/v1/datasets/", {"kind": "pretrain"}),
        "dialog export": call(server, token[Role.ADMIN], "POST", "/api/v1/dialog-exports/", {}),
        "chat message": call(
            server,
            token[Role.CROWDWORKER],
            "POST",
            f"/api/v1/chats/{chat['id']}/messages",
            {"text": "Hello?"},
        ),
        "training job": call(
            server,
            token[Role.RESEARCHER],
            "POST",
            "/api/v1/training-jobs/",
            {"kind": "pretrain", "datasets": [ready.pk], "hyperparameters": {"steps": 5}},
        ),
        "document import": call(
            server,
            token[Role.ADMIN],
            "POST",
            "/api/v1/toolset/documents",
            [{"id": "1", "url": "https://example.org/owls", "title": "Owls", "text": "Owls are birds."}],
        ),
        "evaluation": call(
            server,
            token[Role.RESEARCHER],
            "POST",
            "/api/v1/evaluations/",
            {"evaluation_set": evaluation_set.pk, "model_version": "down-model"},
        ),
    }
    for what, (status, body) in refused.items():
        assert status == 503, (what, body)
        assert body["detail"].startswith(DOWN), (what, body)
    # No phantom rows: nothing pending for work that was never queued.
    assert DatasetVersion.objects.exclude(pk=ready.pk).count() == 0
    assert DialogExport.objects.count() == 0
    assert TrainingJob.objects.count() == 0
    assert Document.objects.count() == 0
    assert Evaluation.objects.count() == 0
    assert Turn.objects.filter(dialog__chat__pk=chat["id"]).count() == 0
    assert call(server, token[Role.CROWDWORKER], "GET", f"/api/v1/chats/{chat['id']}/")[1]["waiting"] is False

    broker.start()
    status, body = call(server, token[Role.RESEARCHER], "POST", "/api/v1/datasets/", {"kind": "pretrain"})
    assert status == 202, body
    assert DatasetVersion.objects.filter(pk=body["id"], status="pending").exists()
    status, body = call(
        server, token[Role.CROWDWORKER], "POST", f"/api/v1/chats/{chat['id']}/messages", {"text": "Hello?"}
    )
    assert status == 202, body


def test_a_rating_is_stored_while_the_broker_is_down(server: str, broker: Broker) -> None:
    """A judgment is the rater's work: it is kept, and its item's consensus waits for the next
    recomputation instead of failing the rater's request."""
    campaign = ssi_campaign(items=1, raters=1)
    worker = UserFactory(role=Role.CROWDWORKER)
    assignment = assignment_lease_next(worker=worker, campaign=campaign)
    assert assignment is not None
    broker.stop()

    status, body = call(
        server,
        api_token_for(user=worker),
        "POST",
        f"/api/v1/assignments/{assignment.pk}/submit",
        {"answers": {"sensible": "yes", "specific": "no"}},
    )

    assert status == 201, body
    assert Judgment.objects.filter(assignment=assignment).count() == 3
