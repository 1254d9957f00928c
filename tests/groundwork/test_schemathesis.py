"""Bad input tried by a machine, every run: schemathesis generates requests from our own OpenAPI
schema (``/api/schema/``), sends them over HTTP to a live server on the test database with a token
of each role, and checks every answer: never a 5xx, and the status code, content type and body
as the schema documents them.

Each operation gets schemathesis's examples and coverage phases (boundary values, missing and
wrong-typed fields, unexpected methods) and ``FUZZ_MAX_EXAMPLES`` generated requests (default 10,
so that ``make test`` stays fast; ``make fuzz`` runs this module alone with many more).
``FUZZ_SEED`` (default 1) fixes what is generated, so a run repeats exactly; ``FUZZ_MAX_SECONDS``
(default: none) stops starting new operations once a role has fuzzed that long.

Path parameters (and the filters of tasks/next, the dialog list and the evaluation set list) are
drawn half the time from real objects made here (a campaign with items, the crowdworker's
assignment and chat, a dialog, a dialog export, a locked evaluation set, a dataset, a training job,
a model version), so that requests reach them and not only 404s. Tasks the requests queue are
recorded, not sent.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import schemathesis
from celery import Celery
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotation import tasks as annotation_tasks
from annotation.models import ChatPurpose
from annotation.services import assignments, chats
from dialogs import evaluation_sets
from dialogs import services as dialog_services
from dialogs.models import Dialog, Mode, Speaker, Turn
from groundwork.accounts import api_token_for
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.factories import UserFactory
from tests.trainer.helpers import tiny_model
from trainer.models import DatasetVersion, Evaluation, TrainingJob

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "1"))
MAX_SECONDS = float(os.environ.get("FUZZ_MAX_SECONDS", "0"))  # per role; 0: no limit
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = [Role.CROWDWORKER, Role.ADMIN, Role.RESEARCHER]

APP_PACKAGES = ["annotation", "dialogs", "groundwork", "toolset", "trainer"]


def import_app_modules() -> None:
    """Hypothesis also draws literals from the app's modules that are imported (its "local
    constants"). Import them all, so that this module alone generates what it does within the
    whole suite, and a failure seen in ``make test`` repeats when this module runs alone."""
    for package in APP_PACKAGES:
        path = importlib.import_module(package).__path__
        for module in pkgutil.walk_packages(path, f"{package}."):
            importlib.import_module(module.name)


import_app_modules()

# The imports' application/x-ndjson bodies are strings in the schema: sent as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


@dataclass
class RealObjects:
    """Values that name real objects, for the parameters of each operation (by its path template)."""

    path: dict[str, list[dict[str, Any]]]
    query: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def fixed_answer(*, dialog_id: int) -> Turn:
    """The model's answer in the seeded chat: a fixed one, no model runs."""
    return dialog_services.turn_add(
        dialog=Dialog.objects.get(pk=dialog_id), speaker=Speaker.MODEL, text="A fixed answer."
    )


def crowd_work(worker: Any, settings: Any) -> RealObjects:
    """A campaign with items, the worker's leased assignment, and an adversarial chat of theirs
    with one exchange (so there is a model turn to flag)."""
    campaign = ssi_campaign(items=3, name="fuzz")
    assignment = assignments.assignment_lease_next(worker=worker, campaign=campaign)
    assert assignment is not None
    settings.GROUNDWORK_RESPONDER = f"{__name__}.fixed_answer"
    chat = chats.chat_start(worker=worker, purpose=ChatPurpose.SAFETY, mode=Mode.ADVERSARIAL)
    chats.chat_say(chat=chat, worker=worker, text="Hello there")
    annotation_tasks.chat_respond_task(chat.dialog_id)  # the task's body, here
    model_turn = Turn.objects.get(dialog_id=chat.dialog_id, speaker=Speaker.MODEL)
    return RealObjects(
        path={
            "/api/v1/campaigns/{campaign_id}/consensus": [{"campaign_id": campaign.pk}],
            "/api/v1/campaigns/{campaign_id}/judgments": [{"campaign_id": campaign.pk}],
            "/api/v1/dialogs/{id}/": [{"id": "fuzz-d0"}],
            "/api/v1/assignments/{assignment_id}/submit": [{"assignment_id": assignment.pk}],
            "/api/v1/assignments/{assignment_id}/skip": [{"assignment_id": assignment.pk}],
            "/api/v1/chats/{chat_id}/": [{"chat_id": chat.pk}],
            "/api/v1/chats/{chat_id}/messages": [{"chat_id": chat.pk}],
            "/api/v1/chats/{chat_id}/finish": [{"chat_id": chat.pk}],
            "/api/v1/chats/{chat_id}/turns/{turn_id}/flag": [{"chat_id": chat.pk, "turn_id": model_turn.pk}],
        },
        query={"/api/v1/tasks/next": [{"campaign": campaign.pk}, {"kind": "ssi"}]},
    )


def staff_data(user: Any) -> RealObjects:
    """A campaign with items and the trainer's objects: a tiny model trained on a pretrain
    dataset (its dataset, job and model version), and a finished dialog export."""
    campaign = ssi_campaign(items=3, name="fuzz")
    model = tiny_model()
    dataset = DatasetVersion.objects.get()
    job = TrainingJob.objects.get()
    export = dialog_services.dialog_export_request(requested_by=user)
    dialog_services.dialog_export_run(export_id=export.pk)
    # A locked evaluation set (DELETE answers 409) cut from the demo dialogs.
    evaluation_set = evaluation_sets.evaluation_set_from_dialogs(
        name="fuzz", dialogs=Dialog.objects.filter(external_id__startswith="fuzz-")
    ).evaluation_set
    evaluation_sets.evaluation_set_lock(evaluation_set=evaluation_set)
    evaluation = Evaluation.objects.create(evaluation_set=evaluation_set, model_version=model, total=1)
    return RealObjects(
        path={
            "/api/v1/campaigns/{campaign_id}/consensus": [{"campaign_id": campaign.pk}],
            "/api/v1/campaigns/{campaign_id}/judgments": [{"campaign_id": campaign.pk}],
            "/api/v1/dialogs/{id}/": [{"id": "fuzz-d0"}, {"id": "pretrain-0"}],
            "/api/v1/dialog-exports/{id}/": [{"id": export.pk}],
            "/api/v1/evaluation-sets/{id}/": [{"id": evaluation_set.pk}],
            "/api/v1/evaluation-sets/{id}/report": [{"id": evaluation_set.pk}],
            "/api/v1/dialog-exports/{id}/download/": [{"id": export.pk}],
            "/api/v1/datasets/{id}/": [{"id": dataset.pk}],
            # the documented URL, and the router's one with a slash (before main's route)
            "/api/v1/datasets/{id}/files/{name}": [
                {"id": dataset.pk, "name": name} for name in sorted(dataset.files)
            ],
            "/api/v1/datasets/{id}/files/{name}/": [
                {"id": dataset.pk, "name": name} for name in sorted(dataset.files)
            ],
            "/api/v1/training-jobs/{id}/": [{"id": job.pk}],
            "/api/v1/training-jobs/{id}/cancel/": [{"id": job.pk}],
            "/api/v1/models/{id}/": [{"id": model.pk}],
            "/api/v1/models/{id}/serve/": [{"id": model.pk}],
            "/api/v1/evaluations/{id}/": [{"id": evaluation.pk}],
        },
        query={
            "/api/v1/dialogs/": [{"purpose": "pretrain"}, {"source": "factory"}],
            "/api/v1/evaluation-sets/": [{"name": "fuzz"}],
            "/api/v1/evaluations/": [{"evaluation_set": evaluation_set.pk, "model_version": model.name}],
        },
    )


def sometimes_real(generated: dict[str, Any] | None, real: list[dict[str, Any]] | None) -> Any:
    """The generated parameters, or (as often) the same with the values of a real object."""
    if not real or not isinstance(generated, dict | None):
        return st.just(generated)
    return st.one_of(st.just(generated), st.sampled_from([{**(generated or {}), **r} for r in real]))


@dataclass
class FuzzRun:
    """What one role's run sent, and its time budget."""

    role: Role
    user: Any = None
    started: float = field(default_factory=time.monotonic)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    operations: set[str] = field(default_factory=set)
    tasks: list[str] = field(default_factory=list)

    def begin(self, operation: str) -> None:
        """Skip an operation not yet begun once the budget is spent (a begun one runs to its end)."""
        if operation not in self.operations:
            spent = time.monotonic() - self.started
            if MAX_SECONDS and spent > MAX_SECONDS:
                pytest.skip(f"FUZZ_MAX_SECONDS spent ({spent:.0f} s) before {operation}")
            self.operations.add(operation)

    def summary(self) -> str:
        spent = time.monotonic() - self.started
        return (
            f"schemathesis as {self.role}: {self.requests.total()} requests to {len(self.requests)} "
            f"operations in {spent:.0f} s; {len(self.tasks)} tasks queued (not sent)"
        )


@pytest.fixture(params=ROLES, ids=[role.value for role in ROLES])
def fuzz_run(request: pytest.FixtureRequest) -> Iterator[FuzzRun]:
    run = FuzzRun(role=request.param)

    def record(app: Celery, name: str, *args: Any, **kwargs: Any) -> None:
        run.tasks.append(name)

    # Tasks are recorded, not sent: in the whole suite the session's real workers consume the test
    # broker, and they must neither train on fuzzed hyperparameters nor write rows after this test.
    # Every way of queueing a task (a task's apply_async, a signature, a name) ends in send_task.
    with mock.patch.object(Celery, "send_task", autospec=True, side_effect=record):
        yield run
    # A run whose token stopped working would pass on 401s alone.
    assert any(200 <= status < 300 for status in run.statuses), f"no request succeeded: {run.statuses}"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write(f"\n{run.summary()}\n")


@pytest.fixture
def api_schema(
    fuzz_run: FuzzRun, live_server: Any, django_db_reset_sequences: None, settings: Any, tmp_path: Path
) -> schemathesis.BaseSchema:
    """The schema as the live server serves it, with a token of the run's role; ids start at 1 in
    every run (reset sequences), so that a run repeats exactly."""
    settings.ARTIFACTS_DIR = tmp_path
    user = fuzz_run.user = UserFactory(role=fuzz_run.role)
    objects = crowd_work(user, settings) if fuzz_run.role == Role.CROWDWORKER else staff_data(user)
    fuzz_run.tasks.clear()  # queued while seeding
    fuzz_run.started = time.monotonic()
    # The server listens on IPv4: asking for localhost would try ::1 first, ~10 ms a request.
    base_url = live_server.url.replace("://localhost:", "://127.0.0.1:")
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            # Generated from the schema and the seed alone, not from what the server answered.
            "phases": {
                "examples": {"extra-data-sources": {"responses": False}},
                "coverage": {"extra-data-sources": {"responses": False}},
                "fuzzing": {"extra-data-sources": {"responses": False}, "error-feedback": {"enabled": False}},
                "stateful": {"enabled": False},
            },
        }
    )
    schema = schemathesis.openapi.from_url(f"{base_url}/api/schema/", config=config)

    @schema.hook
    def flatmap_path_parameters(context: Any, parameters: dict[str, Any] | None) -> Any:
        return sometimes_real(parameters, objects.path.get(context.operation.path))

    @schema.hook
    def flatmap_query(context: Any, query: dict[str, Any] | None) -> Any:
        return sometimes_real(query, objects.query.get(context.operation.path))

    @schema.hook
    def after_call(context: Any, case: Any, response: Any) -> None:
        fuzz_run.requests[context.operation.label] += 1
        fuzz_run.statuses[response.status_code] += 1

    return schema


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 relabels the test item through ``_nodeid``, which pytest 9.2's nodes no
    longer have; give it the id to start from."""
    request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_api_answers_as_documented(case: schemathesis.Case, fuzz_run: FuzzRun) -> None:
    fuzz_run.begin(case.operation.label)
    # The role's live token, a new one if a request revoked it (DELETE /api/v1/auth/token/).
    token = api_token_for(user=fuzz_run.user)
    case.call_and_validate(checks=CHECKS, headers={"Authorization": f"Token {token}"})
