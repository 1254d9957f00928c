"""The dialogs REST API: ``/api/v1/dialogs/`` and ``/api/v1/dialog-exports/``."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from dialogs.models import Dialog, DialogExport, Turn
from dialogs.services import dialog_export_run
from groundwork.roles import Role
from tests.factories import dialog_with_turns

pytestmark = pytest.mark.django_db

DIALOGS = "/api/v1/dialogs/"
EXPORTS = "/api/v1/dialog-exports/"


def dialog(dialog_id: str, *texts: str, purpose: str = "quality") -> dict[str, Any]:
    turns = [{"speaker": "user" if i % 2 == 0 else "model", "text": text} for i, text in enumerate(texts)]
    return {"id": dialog_id, "purpose": purpose, "turns": turns, "meta": {}}


@pytest.fixture
def admin_client(api_client: APIClient, users: dict[Role, Any]) -> APIClient:
    api_client.force_authenticate(users[Role.ADMIN])
    return api_client


@pytest.fixture
def researcher_client(api_client: APIClient, users: dict[Role, Any]) -> APIClient:
    api_client.force_authenticate(users[Role.RESEARCHER])
    return api_client


def dated_dialogs() -> list[str]:
    """Dialogs created at shuffled times; returns their ids, newest first."""
    start = timezone.now() - timedelta(days=1)
    minutes = [5, 11, 0, 7, 2, 9, 4, 10, 1, 8, 3, 6]
    for minute in minutes:
        created = dialog_with_turns(["Hi"], external_id=f"t{minute:02d}")
        Dialog.objects.filter(pk=created.pk).update(created_at=start + timedelta(minutes=minute))
    return [f"t{minute:02d}" for minute in sorted(minutes, reverse=True)]


# --- reading --------------------------------------------------------------------------------


def test_admin_lists_dialogs_with_their_turns_in_order(admin_client: APIClient) -> None:
    dialog_with_turns(["Hi", "Hello", "How are you?"], external_id="a", purpose="quality")
    # Turns created out of order must still come back by index.
    second = dialog_with_turns([], external_id="b", purpose="safety")
    Turn.objects.create(dialog=second, index=1, speaker="model", text="second")
    Turn.objects.create(dialog=second, index=0, speaker="user", text="first")

    response = admin_client.get(DIALOGS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    by_id = {d["id"]: d for d in body["results"]}
    assert by_id["a"]["purpose"] == "quality"
    assert by_id["a"]["turns"] == [
        {"index": 0, "speaker": "user", "text": "Hi", "model_version": "", "fallback": ""},
        {"index": 1, "speaker": "model", "text": "Hello", "model_version": "", "fallback": ""},
        {"index": 2, "speaker": "user", "text": "How are you?", "model_version": "", "fallback": ""},
    ]
    assert [t["text"] for t in by_id["b"]["turns"]] == ["first", "second"]


def test_listing_is_paginated_and_every_dialog_is_on_exactly_one_page(admin_client: APIClient) -> None:
    for n in range(52):
        dialog_with_turns(["Hi"], external_id=f"d{n}")

    body = admin_client.get(DIALOGS).json()

    assert body["count"] == 52
    assert len(body["results"]) == 50
    assert body["next"] is not None
    second = admin_client.get(body["next"]).json()
    assert len(second["results"]) == 2
    seen = [d["id"] for d in body["results"] + second["results"]]
    assert sorted(seen) == sorted(f"d{n}" for n in range(52))


def test_the_list_shows_the_newest_dialogs_first(admin_client: APIClient) -> None:
    # Dialog.Meta.ordering is newest first; pages of an unordered list could repeat or skip dialogs.
    # Creation times in an order unrelated to the primary keys, so no accident of the query plan
    # (by id, up or down) can pass for the right order.
    expected = dated_dialogs()

    body = admin_client.get(DIALOGS).json()

    assert [d["id"] for d in body["results"]] == expected


def test_listing_makes_a_fixed_number_of_queries(admin_client: APIClient) -> None:
    for n in range(3):
        dialog_with_turns(["Hi", "Hello"], external_id=f"few-{n}")
    admin_client.get(DIALOGS)  # the user's permissions are loaded once, then cached
    with CaptureQueriesContext(connection) as few:
        admin_client.get(DIALOGS)
    for n in range(20):
        dialog_with_turns(["Hi", "Hello"], external_id=f"many-{n}")
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(DIALOGS)

    assert response.json()["count"] == 23
    assert len(many.captured_queries) == len(few.captured_queries)


def test_purpose_filters_the_list(admin_client: APIClient) -> None:
    dialog_with_turns(["Hi"], external_id="q1", purpose="quality")
    dialog_with_turns(["Hi"], external_id="s1", purpose="safety")
    dialog_with_turns(["Hi"], external_id="q2", purpose="quality")

    body = admin_client.get(DIALOGS, {"purpose": "safety"}).json()

    assert body["count"] == 1
    assert [d["id"] for d in body["results"]] == ["s1"]


def test_detail_by_an_id_with_colons_and_slashes(admin_client: APIClient) -> None:
    dialog_with_turns(["What's up?", "Not much."], external_id="vendor:batch/2024/07:17")
    dialog_with_turns(["Other"], external_id="vendor:batch")

    response = admin_client.get(f"{DIALOGS}vendor:batch/2024/07:17/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "vendor:batch/2024/07:17"
    assert [t["text"] for t in body["turns"]] == ["What's up?", "Not much."]
    assert admin_client.get(f"{DIALOGS}vendor:batch/2024/").status_code == 404


# --- importing ------------------------------------------------------------------------------


def test_admin_posts_a_list_of_dialogs(admin_client: APIClient, users: dict[Role, Any]) -> None:
    response = admin_client.post(
        DIALOGS, [dialog("p1", "Hi", "Hello"), dialog("p2", "Hey", purpose="safety")], format="json"
    )

    assert response.status_code == 201
    assert response.json() == {"created": 2, "unchanged": 0, "ids": ["p1", "p2"]}
    p1 = Dialog.objects.get(external_id="p1")
    assert (p1.source, p1.created_by) == ("api", users[Role.ADMIN])
    assert list(p1.turns.order_by("index").values_list("speaker", "text")) == [
        ("user", "Hi"),
        ("model", "Hello"),
    ]
    assert Dialog.objects.get(external_id="p2").purpose == "safety"


def test_admin_posts_a_single_dialog_object(admin_client: APIClient) -> None:
    response = admin_client.post(DIALOGS, dialog("one", "Hi"), format="json")

    assert response.status_code == 201
    assert response.json()["created"] == 1
    assert Dialog.objects.filter(external_id="one").exists()


def test_admin_posts_json_lines(admin_client: APIClient) -> None:
    body = "\n".join(json.dumps(d) for d in [dialog("n1", "Hi"), dialog("n2", "Hey", "Yo")]) + "\n"

    response = admin_client.generic("POST", DIALOGS, body, content_type="application/x-ndjson")

    assert response.status_code == 201
    assert response.json()["created"] == 2
    assert Turn.objects.filter(dialog__external_id="n2").count() == 2


def test_reposting_the_same_dialogs_changes_nothing(admin_client: APIClient) -> None:
    payload = [dialog("p1", "Hi"), dialog("p2", "Hey")]
    admin_client.post(DIALOGS, payload, format="json")

    response = admin_client.post(DIALOGS, payload, format="json")

    assert response.status_code == 201
    assert response.json() == {"created": 0, "unchanged": 2, "ids": []}
    assert Dialog.objects.count() == 2


def test_a_bad_dialog_in_a_post_is_a_400_and_nothing_is_created(admin_client: APIClient) -> None:
    bad = {"id": "p2", "purpose": "quality", "turns": [{"speaker": "bot", "text": "beep"}]}

    response = admin_client.post(DIALOGS, [dialog("p1", "Hi"), bad], format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert len(errors) == 1
    assert errors[0]["line"] == 2
    assert errors[0]["field"] == "turns[0].speaker"
    assert "bot" in errors[0]["message"]
    assert Dialog.objects.count() == 0


def test_bad_json_lines_name_their_line(admin_client: APIClient) -> None:
    body = json.dumps(dialog("n1", "Hi")) + "\n\n{broken\n"

    response = admin_client.generic("POST", DIALOGS, body, content_type="application/x-ndjson")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(3, "(json)")]
    assert Dialog.objects.count() == 0


def test_a_model_version_too_long_for_the_database_is_a_400(admin_client: APIClient) -> None:
    too_long = {**dialog("p2", "Hi"), "model_version": "m" * 101}

    response = admin_client.post(DIALOGS, [dialog("p1", "Hi"), too_long], format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(2, "model_version")]
    assert Dialog.objects.count() == 0


# --- permissions ----------------------------------------------------------------------------


def test_a_researcher_may_read_but_not_import(researcher_client: APIClient) -> None:
    dialog_with_turns(["Hi"], external_id="r1")

    assert researcher_client.get(DIALOGS).status_code == 200
    response = researcher_client.post(DIALOGS, [dialog("p1", "Hi")], format="json")

    assert response.status_code == 403
    assert not Dialog.objects.filter(external_id="p1").exists()


def test_a_crowdworker_may_not_read_dialogs(api_client: APIClient, users: dict[Role, Any]) -> None:
    dialog_with_turns(["Hi"], external_id="c1")
    api_client.force_authenticate(users[Role.CROWDWORKER])

    assert api_client.get(DIALOGS).status_code == 403
    assert api_client.get(f"{DIALOGS}c1/").status_code == 403
    assert api_client.post(DIALOGS, [dialog("p1", "Hi")], format="json").status_code == 403
    assert api_client.get(EXPORTS).status_code == 403


def test_anonymous_requests_are_401(api_client: APIClient, db: None) -> None:
    dialog_with_turns(["Hi"], external_id="c1")

    response = api_client.get(DIALOGS)

    assert response.status_code == 401
    assert "WWW-Authenticate" in response.headers
    assert api_client.post(DIALOGS, [dialog("p1", "Hi")], format="json").status_code == 401
    assert api_client.post(EXPORTS, {}, format="json").status_code == 401
    assert Dialog.objects.count() == 1


# --- exports --------------------------------------------------------------------------------


@pytest.fixture
def artifacts(settings: Any, tmp_path: Path) -> Path:
    settings.ARTIFACTS_DIR = tmp_path
    return tmp_path


def test_requesting_an_export_enqueues_one_task_after_commit(
    researcher_client: APIClient, artifacts: Path, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = researcher_client.post(EXPORTS, {"purpose": "quality"}, format="json")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["download"] is None
    export = DialogExport.objects.get(pk=body["id"])
    assert (export.status, export.purpose) == ("pending", "quality")
    assert len(callbacks) == 1


def test_an_export_runs_and_can_be_downloaded(
    researcher_client: APIClient, artifacts: Path, django_capture_on_commit_callbacks: Any
) -> None:
    dialog_with_turns(["Hi", "Hello"], external_id="q1", purpose="quality")
    dialog_with_turns(["Is it safe?"], external_id="s1", purpose="safety")
    dialog_with_turns(["Hey"], external_id="q2", purpose="quality")
    with django_capture_on_commit_callbacks():
        export_id = researcher_client.post(EXPORTS, {"purpose": "quality"}, format="json").json()["id"]

    dialog_export_run(export_id=export_id)
    response = researcher_client.get(f"{EXPORTS}{export_id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "done"
    assert body["dialog_count"] == 2
    assert body["finished_at"] is not None
    download = researcher_client.get(body["download"])
    assert download.status_code == 200
    content = b"".join(download.streaming_content)  # the test client closes the file after this
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert [json.loads(line)["id"] for line in content.decode().splitlines()] == ["q1", "q2"]
    assert json.loads(content.decode().splitlines()[0])["turns"] == [
        {"speaker": "user", "text": "Hi"},
        {"speaker": "model", "text": "Hello"},
    ]
    assert Path(DialogExport.objects.get(pk=export_id).path).is_relative_to(artifacts)


def test_an_unfinished_export_has_no_download(
    researcher_client: APIClient, artifacts: Path, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks():
        export_id = researcher_client.post(EXPORTS, {}, format="json").json()["id"]

    assert researcher_client.get(f"{EXPORTS}{export_id}/download/").status_code == 404


def test_an_export_of_an_unknown_purpose_is_refused(
    researcher_client: APIClient, artifacts: Path, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = researcher_client.post(EXPORTS, {"purpose": "chitchat"}, format="json")

    assert response.status_code == 400
    assert "purpose" in response.json()
    assert DialogExport.objects.count() == 0
    assert callbacks == []


# --- ids that could not be linked to ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_id", "codepoint"),
    [
        ("a\nb", "U+000A"),
        ("tab\there", "U+0009"),
        ("bell\x07", "U+0007"),
        ("c1\x85", "U+0085"),
        ("ls\u2028", "U+2028"),
    ],
)
def test_an_id_with_a_control_character_is_refused_and_the_dialog_pages_keep_working(
    admin_client: APIClient, client: Any, users: dict[Role, Any], bad_id: str, codepoint: str
) -> None:
    """A line break in an id was stored, and then /dialogs/ could not link to it: a 500 for all."""
    response = admin_client.post(DIALOGS, [dialog("fine", "Hi"), dialog(bad_id, "Hi")], format="json")

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["line"], error["field"]) == (2, "id")
    assert f"contains a control character ({codepoint})" in error["message"]
    assert not Dialog.objects.exists()
    client.force_login(users[Role.ADMIN])
    assert client.get("/dialogs/").status_code == 200


def test_role_and_model_version_with_a_control_character_are_refused(admin_client: APIClient) -> None:
    lines = [
        json.dumps({**dialog("a", "Hi"), "model_version": "v1\r\n"}),
        json.dumps({**dialog("b", "Hi"), "role": "everest\t"}),
    ]

    response = admin_client.post(DIALOGS, "\n".join(lines), content_type="application/x-ndjson")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(1, "model_version"), (2, "role")]


def test_an_id_with_dots_is_not_read_as_a_format_suffix(admin_client: APIClient) -> None:
    """DRF's router took /dialogs/d.json as the dialog "d" in the format json."""
    dialog_with_turns(["Hi"], external_id="d")
    dialog_with_turns(["Hello"], external_id="d.json")

    response = admin_client.get(f"{DIALOGS}d.json", follow=True)

    assert response.status_code == 200
    assert response.json()["id"] == "d.json"


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("source=a%00b", "source", "contains a control character"),
        (
            "purpose=chitchat",
            "purpose",
            "expected one of quality, safety, groundedness, role, pretrain, got 'chitchat'",
        ),
    ],
)
def test_a_list_filter_that_can_match_nothing_is_a_400_naming_it(
    admin_client: APIClient, query: str, field: str, message: str
) -> None:
    """A NUL in ?source= reached PostgreSQL, which cannot compare it: a 500."""
    response = admin_client.get(f"{DIALOGS}?{query}")

    assert response.status_code == 400
    assert response.json() == {field: [message]}


def test_a_dialog_id_with_a_nul_is_a_json_404(admin_client: APIClient) -> None:
    response = admin_client.get(f"{DIALOGS}a%00b/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_meta_that_postgresql_cannot_store_is_refused_naming_it(admin_client: APIClient) -> None:
    """A key with an unpaired surrogate passed the check (dumps escaped it) and failed the insert."""
    body = json.dumps({**dialog("m", "Hi"), "meta": {"\ud800": 1}})  # JSON escapes it: "\\ud800"

    response = admin_client.post(DIALOGS, body, content_type="application/json")

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["line"], error["field"]) == (1, "meta")
    assert "unpaired surrogate" in error["message"]
    assert not Dialog.objects.exists()


def test_an_export_whose_task_raised_shows_failed_with_the_cause(
    researcher_client: APIClient, artifacts: Path, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """The task marks the export failed (``JobTask``): the researcher sees why, not ``running`` forever."""
    from dialogs import services, tasks

    dialog_with_turns(["Hi", "Hello"], external_id="q1", purpose="quality")
    with django_capture_on_commit_callbacks():
        export_id = researcher_client.post(EXPORTS, {"purpose": "quality"}, format="json").json()["id"]

    def broken(**kwargs: Any) -> int:
        raise ValueError("the disk said no")

    monkeypatch.setattr(services, "dialogs_export_file", broken)
    assert tasks.dialog_export_run_task.apply(args=[export_id]).failed()  # as a worker runs it

    body = researcher_client.get(f"{EXPORTS}{export_id}/").json()
    assert (body["status"], body["error"]) == ("failed", "ValueError: the disk said no")
