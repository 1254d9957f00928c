"""Every endpoint × anonymous / crowdworker / admin / researcher → the status each must get.

A new URL without a row here fails ``test_every_endpoint_is_in_the_matrix``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotation.services import assignments, chats
from dialogs.evaluation_sets import evaluation_set_from_dialogs, evaluation_set_lock
from dialogs.models import DialogExport
from dialogs.services import turn_add
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.factories import dialog_with_turns
from trainer.models import DatasetVersion, Evaluation, ModelVersion, TrainingJob

ANON = "anonymous"
WHO = [ANON, Role.CROWDWORKER, Role.ADMIN, Role.RESEARCHER]
NEW_DIALOG = {"id": "matrix-new", "purpose": "quality", "turns": [{"speaker": "user", "text": "Hello"}]}
NEW_EVALUATION_SET = {
    "name": "matrix-new",
    "contexts": [{"id": "c1", "purpose": "quality", "context": [{"speaker": "user", "text": "Hello"}]}],
}


@dataclass(frozen=True)
class Case:
    name: str  # URL name
    method: str
    expected: tuple[int, int, int, int]  # anonymous, crowdworker, admin, researcher
    kwargs: Callable[[dict[str, Any]], dict[str, Any]] = lambda objs: {}
    data: Any = None  # a body, or a function of the objects giving one
    form: bool = False  # a page's form post rather than a JSON body


def page(anon: int, crowdworker: int, admin: int, researcher: int) -> tuple[int, int, int, int]:
    return (anon, crowdworker, admin, researcher)


REDIRECT = 302
CASES = [
    Case("home", "get", page(REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    Case("healthz", "get", page(200, 200, 200, 200)),
    Case("login", "get", page(200, REDIRECT, REDIRECT, REDIRECT)),
    Case("logout", "post", page(REDIRECT, REDIRECT, REDIRECT, REDIRECT)),
    Case("work", "get", page(REDIRECT, 200, 403, 403)),
    Case("work-rate", "get", page(REDIRECT, 200, 403, 403), lambda o: {"campaign_id": o["campaign"]}),
    Case(
        "work-submit",
        "post",
        page(REDIRECT, 303, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"sensible": "no"},
        form=True,
    ),
    Case("work-skip", "post", page(REDIRECT, 303, 403, 403), lambda o: {"assignment_id": o["assignment"]}),
    # The matrix's assignment is in an SSI campaign: the rewrite posts refuse it (400) for its owner.
    Case("work-rewrite", "get", page(REDIRECT, 200, 403, 403), lambda o: {"campaign_id": o["campaign"]}),
    Case(
        "work-rewrite-research",
        "post",
        page(REDIRECT, 400, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"query": "jaguar"},
        form=True,
    ),
    Case(
        "work-rewrite-submit",
        "post",
        page(REDIRECT, 400, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"claims_external": "no"},
        form=True,
    ),
    # Evaluation tasks: the matrix's assignment is an SSI item, which the write and compare posts
    # refuse (400) for its owner.
    Case("work-write", "get", page(REDIRECT, 200, 403, 403), lambda o: {"campaign_id": o["campaign"]}),
    Case(
        "work-write-submit",
        "post",
        page(REDIRECT, 400, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"response": "Hello"},
        form=True,
    ),
    Case("work-compare", "get", page(REDIRECT, 200, 403, 403), lambda o: {"campaign_id": o["campaign"]}),
    Case(
        "work-compare-submit",
        "post",
        page(REDIRECT, 400, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"choice": "1"},
        form=True,
    ),
    # Chats: the matrix's chat is the crowdworker's adversarial safety chat with one exchange, so
    # its owner can flag the model turn, cannot finish (1 turn of at least 5) nor ask again (answered).
    Case("work-chat", "get", page(REDIRECT, 200, 403, 403)),
    Case("work-chat-start", "post", page(REDIRECT, 303, 403, 403), data={"purpose": "quality"}, form=True),
    Case("work-chat-detail", "get", page(REDIRECT, 200, 403, 403), lambda o: {"chat_id": o["chat"]}),
    Case(
        "work-chat-say",
        "post",
        page(REDIRECT, 303, 403, 403),
        lambda o: {"chat_id": o["chat"]},
        data={"text": "Hello"},
        form=True,
    ),
    Case("work-chat-retry", "post", page(REDIRECT, 409, 403, 403), lambda o: {"chat_id": o["chat"]}),
    Case("work-chat-finish", "post", page(REDIRECT, 400, 403, 403), lambda o: {"chat_id": o["chat"]}),
    Case(
        "work-chat-flag",
        "post",
        page(REDIRECT, 303, 403, 403),
        lambda o: {"chat_id": o["chat"], "turn_id": o["chat_turn"]},
        data={"reason": "harmful"},
        form=True,
    ),
    Case("dialog-list", "get", page(REDIRECT, 403, 200, 200)),
    Case("dialog-detail", "get", page(REDIRECT, 403, 200, 200), lambda o: {"external_id": o["dialog"]}),
    Case("api-token", "post", page(400, 400, 400, 400), data={"username": "nobody", "password": "x"}),
    Case("api-token", "delete", page(401, 204, 204, 204)),
    Case("schema", "get", page(200, 200, 200, 200)),
    Case("swagger-ui", "get", page(200, 200, 200, 200)),
    Case("api:api-root", "get", page(401, 200, 200, 200)),
    Case("api:dialog-list", "get", page(401, 403, 200, 200)),
    Case("api:dialog-list", "post", page(401, 403, 201, 403), data=NEW_DIALOG),
    Case("api:dialog-detail", "get", page(401, 403, 200, 200), lambda o: {"id": o["dialog"]}),
    # Evaluation sets: admins and researchers import and read them; the matrix's set is locked.
    Case("api:evaluation-set-list", "get", page(401, 403, 200, 200)),
    Case("api:evaluation-set-list", "post", page(401, 403, 201, 201), data=NEW_EVALUATION_SET),
    Case("api:evaluation-set-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["evaluation_set"]}),
    Case(
        "api:evaluation-set-detail", "delete", page(401, 403, 409, 409), lambda o: {"pk": o["evaluation_set"]}
    ),
    # Its report (the trainer's): admins and researchers read it, as a page and over the API.
    Case(
        "evaluation-report", "get", page(REDIRECT, 403, 200, 200), lambda o: {"set_id": o["evaluation_set"]}
    ),
    Case("api:evaluation-set-report", "get", page(401, 403, 200, 200), lambda o: {"pk": o["evaluation_set"]}),
    Case("api:dialog-export-list", "get", page(401, 403, 200, 200)),
    Case("api:dialog-export-list", "post", page(401, 403, 202, 202), data={"purpose": "quality"}),
    Case("api:dialog-export-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["export"]}),
    Case("api:dialog-export-download", "get", page(401, 403, 200, 200), lambda o: {"pk": o["export"]}),
    Case("task-next", "get", page(401, 200, 403, 403)),
    Case(
        "assignment-submit",
        "post",
        page(401, 201, 403, 403),
        lambda o: {"assignment_id": o["assignment"]},
        data={"answers": {"sensible": "no"}},
    ),
    Case("assignment-skip", "post", page(401, 200, 403, 403), lambda o: {"assignment_id": o["assignment"]}),
    Case(
        "campaign-judgments-import",
        "post",
        page(401, 403, 201, 403),
        lambda o: {"campaign_id": o["campaign"]},
        data=[
            {
                "item": {"key": "ext-1", "context": [], "response": "Hi"},
                "rater": "r1",
                "attribute": "sensible",
                "value": "no",
            }
        ],
    ),
    Case("chat-start", "post", page(401, 201, 403, 403), data={"purpose": "quality"}),
    Case("chat-detail", "get", page(401, 200, 403, 403), lambda o: {"chat_id": o["chat"]}),
    Case(
        "chat-messages",
        "post",
        page(401, 202, 403, 403),
        lambda o: {"chat_id": o["chat"]},
        data={"text": "Hello"},
    ),
    Case("chat-finish", "post", page(401, 400, 403, 403), lambda o: {"chat_id": o["chat"]}),
    Case(
        "chat-turn-flag",
        "post",
        page(401, 201, 403, 403),
        lambda o: {"chat_id": o["chat"], "turn_id": o["chat_turn"]},
        data={"reason": "harmful"},
    ),
    Case("toolset-query", "post", page(401, 200, 200, 200), data={"query": "135+7721", "session": "matrix"}),
    Case(
        "toolset-documents-import",
        "post",
        page(401, 403, 201, 403),
        data=[{"url": "https://en.wikipedia.org/wiki/Matrix", "title": "Matrix", "text": "An array."}],
    ),
    Case(
        "campaign-consensus-export", "get", page(401, 403, 200, 200), lambda o: {"campaign_id": o["campaign"]}
    ),
    Case("campaign-rater-model", "post", page(401, 403, 202, 403), lambda o: {"campaign_id": o["campaign"]}),
    # The matrix's campaign has no Dawid–Skene run: 404 once the role is admitted.
    Case("campaign-rater-model", "get", page(401, 403, 404, 404), lambda o: {"campaign_id": o["campaign"]}),
    # Trainer: admins watch and export datasets; only researchers train and choose the serving model.
    Case("api:dataset-list", "get", page(401, 403, 200, 200)),
    Case("api:dataset-list", "post", page(401, 403, 202, 202), data={"kind": "pretrain"}),
    Case("api:dataset-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["dataset"]}),
    Case(
        "api:dataset-file",
        "get",
        page(401, 403, 200, 200),
        lambda o: {"pk": o["dataset"], "name": "manifest.json"},
    ),
    Case("api:training-job-list", "get", page(401, 403, 200, 200)),
    Case(
        "api:training-job-list",
        "post",
        page(401, 403, 403, 202),
        lambda o: {},
        data=lambda o: {"kind": "pretrain", "datasets": [o["dataset"]], "hyperparameters": {"steps": 5}},
    ),
    Case("api:training-job-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["job"]}),
    Case("api:training-job-cancel", "post", page(401, 403, 403, 200), lambda o: {"pk": o["job"]}),
    Case("api:model-version-list", "get", page(401, 403, 200, 200)),
    Case("api:model-version-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["model"]}),
    Case("api:model-version-serve", "post", page(401, 403, 403, 200), lambda o: {"pk": o["model"]}),
    # A researcher may import; this folder is not there, so the request itself is refused.
    Case("api:model-version-import", "post", page(401, 403, 403, 400), data={"folder": "none", "name": "m"}),
    # Evaluations: admins watch them; only researchers evaluate a model version.
    Case("api:evaluation-list", "get", page(401, 403, 200, 200)),
    Case(
        "api:evaluation-list",
        "post",
        page(401, 403, 403, 202),
        data=lambda o: {"evaluation_set": o["evaluation_set"], "model_version": "matrix-model"},
    ),
    Case("api:evaluation-detail", "get", page(401, 403, 200, 200), lambda o: {"pk": o["evaluation"]}),
]


@pytest.fixture
def objects(db: None, settings: Any, tmp_path: Any, users: dict[Any, Any]) -> dict[str, Any]:
    settings.ARTIFACTS_DIR = tmp_path
    dialog = dialog_with_turns(["Hi", "Hello there"], external_id="matrix:1/a", purpose="quality")
    path = tmp_path / "export.jsonl"
    path.write_text('{"id": "matrix:1/a"}\n')
    export = DialogExport.objects.create(status=DialogExport.Status.DONE, path=str(path), dialog_count=1)
    campaign = ssi_campaign(items=2, name="matrix")
    # The crowdworker's own lease: what the submit and skip rows act on.
    assignment = assignments.assignment_lease_next(worker=users[Role.CROWDWORKER], campaign=campaign)
    (tmp_path / "datasets" / "1").mkdir(parents=True)
    (tmp_path / "datasets" / "1" / "manifest.json").write_text("{}\n")
    dataset = DatasetVersion.objects.create(
        kind=DatasetVersion.Kind.PRETRAIN,
        status=DatasetVersion.Status.READY,
        directory="datasets/1",
        files={"manifest.json": {"sha256": "0" * 64, "bytes": 3}},
        tokenizer_sha256="t" * 64,
    )
    model = ModelVersion.objects.create(
        name="matrix-model", directory="models/matrix", tokenizer_sha256="t" * 64
    )
    chat = chats.chat_start(worker=users[Role.CROWDWORKER], purpose="safety", mode="adversarial")
    turn_add(dialog=chat.dialog, speaker="user", text="Say something awful.")
    chat_turn = turn_add(dialog=chat.dialog, speaker="model", text="I would rather not.")
    evaluation_set = evaluation_set_from_dialogs(name="matrix", dialogs=[dialog]).evaluation_set
    evaluation_set_lock(evaluation_set=evaluation_set)
    job = TrainingJob.objects.create(kind=TrainingJob.Kind.PRETRAIN, total_steps=5)
    job.datasets.set([dataset])
    evaluation = Evaluation.objects.create(evaluation_set=evaluation_set, model_version=model, total=1)
    return {
        "dialog": dialog.external_id,
        "export": export.pk,
        "campaign": campaign.pk,
        "assignment": assignment.pk,
        "dataset": dataset.pk,
        "job": job.pk,
        "model": model.pk,
        "chat": chat.pk,
        "chat_turn": chat_turn.pk,
        "evaluation_set": evaluation_set.pk,
        "evaluation": evaluation.pk,
    }


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method.upper()} {c.name}")
@pytest.mark.parametrize("who", WHO, ids=str)
def test_endpoint_answers_each_role_as_it_must(case: Case, who: Any, objects, users, api_client) -> None:
    if who != ANON:
        api_client.force_login(users[who])
    url = reverse(case.name, kwargs=case.kwargs(objects))

    data = case.data(objects) if callable(case.data) else case.data
    response = getattr(api_client, case.method)(url, data, format="json" if data and not case.form else None)

    expected = case.expected[WHO.index(who)]
    assert response.status_code == expected, (
        f"{case.method.upper()} {url} as {who}: {response.content[:300]!r}"
    )
    if expected == REDIRECT and who == ANON and case.name not in ("logout", "home"):
        assert response["Location"].startswith(reverse("login"))


def test_admin_site_is_for_admins_and_researchers(users, client) -> None:
    assert client.get("/admin/").status_code == 302
    client.force_login(users[Role.CROWDWORKER])
    assert client.get("/admin/")["Location"].startswith("/admin/login/")
    for role in (Role.ADMIN, Role.RESEARCHER):
        client.force_login(users[role])
        assert client.get("/admin/").status_code == 200
        assert client.get("/admin/dialogs/dialog/").status_code == 200
    # Researchers read dialogs; only admins change them.
    client.force_login(users[Role.RESEARCHER])
    assert client.get("/admin/dialogs/dialog/add/").status_code == 403
    client.force_login(users[Role.ADMIN])
    assert client.get("/admin/dialogs/dialog/add/").status_code == 200


def _url_names(resolver: URLResolver, namespace: str = "") -> set[str]:
    names: set[str] = set()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue  # the Django admin checks staff and model permissions itself (test above)
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= _url_names(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            if "format" in pattern.pattern.regex.groupindex:
                continue  # DRF's ".json" suffix twins of the same views
            names.add(namespace + pattern.name)
    return names


def test_every_endpoint_is_in_the_matrix() -> None:
    missing = _url_names(get_resolver()) - {case.name for case in CASES}
    assert not missing, f"endpoints with no row in the role matrix: {sorted(missing)}"
