"""Evaluation sets over HTTP: ``/api/v1/evaluation-sets/`` and the admin's pages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from dialogs.evaluation_sets import evaluation_set_import, evaluation_set_lock, parse_objects
from dialogs.models import EvaluationContext, EvaluationSet
from groundwork.roles import Role
from tests.dialogs.test_evaluation_sets import context
from tests.factories import RoleFactory

pytestmark = pytest.mark.django_db

SETS = "/api/v1/evaluation-sets/"


@pytest.fixture
def researcher_client(api_client: APIClient, users: dict[Role, Any]) -> APIClient:
    api_client.force_authenticate(users[Role.RESEARCHER])
    return api_client


def saved_set(name: str = "mtb", *texts: str, locked: bool = False) -> EvaluationSet:
    records = parse_objects([context(f"c{i}", text) for i, text in enumerate(texts or ("Hi",))])
    evaluation_set = evaluation_set_import(name=name, records=records).evaluation_set
    return evaluation_set_lock(evaluation_set=evaluation_set) if locked else evaluation_set


# --- importing ----------------------------------------------------------------------------------


def test_a_researcher_imports_a_set_as_json_and_reads_it_back(
    researcher_client: APIClient, users: dict[Role, Any]
) -> None:
    RoleFactory(slug="everest")
    contexts = [
        context("q1", "Do you like jazz?", "I do.", "Why?"),
        context("r1", "Hi!", purpose="role", role="everest", reference="Hello, I am Mount Everest."),
    ]

    created = researcher_client.post(
        SETS, {"name": "mtb", "description": "First try", "contexts": contexts}, format="json"
    )
    detail = researcher_client.get(f"{SETS}{created.json()['id']}/")

    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["version"], body["context_count"], body["created"]) == ("mtb", 1, 2, True)
    assert (body["locked_at"], body["source"], body["created_by"]) == (
        None,
        "api",
        users[Role.RESEARCHER].username,
    )
    assert detail.status_code == 200
    assert detail.json()["contexts"] == [
        {
            "id": "q1",
            "purpose": "quality",
            "role": None,
            "context": contexts[0]["context"],
            "reference": "",
            "source_dialog": None,
        },
        {
            "id": "r1",
            "purpose": "role",
            "role": "everest",
            "context": contexts[1]["context"],
            "reference": "Hello, I am Mount Everest.",
            "source_dialog": None,
        },
    ]


def test_a_set_can_be_posted_as_json_lines_with_its_name_in_the_query(researcher_client: APIClient) -> None:
    body = "".join(
        json.dumps(c) + "\n" for c in [context("c1", "Hi"), context("c2", "Hey", purpose="safety")]
    )

    response = researcher_client.generic(
        "POST", f"{SETS}?name=safety-probe&description=Two+lines", body, content_type="application/x-ndjson"
    )

    assert response.status_code == 201
    evaluation_set = EvaluationSet.objects.get()
    assert (evaluation_set.name, evaluation_set.description, evaluation_set.context_count) == (
        "safety-probe",
        "Two lines",
        2,
    )


def test_posting_again_makes_version_2_or_nothing_when_identical(researcher_client: APIClient) -> None:
    first = {"name": "mtb", "contexts": [context("c1", "Hi")]}
    researcher_client.post(SETS, first, format="json")

    same = researcher_client.post(SETS, first, format="json")
    changed = researcher_client.post(
        SETS, {"name": "mtb", "contexts": [context("c1", "Hello")]}, format="json"
    )

    assert (same.status_code, same.json()["version"], same.json()["created"]) == (200, 1, False)
    assert (changed.status_code, changed.json()["version"], changed.json()["created"]) == (201, 2, True)
    listed = researcher_client.get(SETS, {"name": "mtb"}).json()["results"]
    assert [s["version"] for s in listed] == [2, 1]


def test_a_bad_context_is_a_400_naming_line_and_field_and_nothing_is_written(
    researcher_client: APIClient,
) -> None:
    contexts = [
        context("c1", "Hi"),
        {"id": "c2", "purpose": "quality"},
        context("c3", "Hi", purpose="role", role="nobody"),
        context("c1", "Again"),
    ]

    response = researcher_client.post(SETS, {"name": "mtb", "contexts": contexts}, format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [
        (2, "context"),
        (3, "role"),
        (4, "id"),
    ]
    assert "duplicate id 'c1' (also line 1)" in response.json()["errors"][2]["message"]
    assert EvaluationSet.objects.count() == 0
    assert EvaluationContext.objects.count() == 0


def test_bad_json_lines_name_their_line(researcher_client: APIClient) -> None:
    body = json.dumps(context("c1", "Hi")) + "\n{broken\n"

    response = researcher_client.generic(
        "POST", f"{SETS}?name=mtb", body, content_type="application/x-ndjson"
    )

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(2, "(json)")]
    assert EvaluationSet.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"contexts": []}, "name"),
        ({"name": "", "contexts": []}, "name"),
        ({"name": "mtb"}, "contexts"),
        ({"name": "mtb", "contexts": {"id": "c1"}}, "contexts"),
    ],
)
def test_a_post_without_a_name_or_contexts_is_a_400(
    researcher_client: APIClient, body: dict[str, Any], field: str
) -> None:
    response = researcher_client.post(SETS, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert EvaluationSet.objects.count() == 0


def test_a_json_list_is_not_a_set(researcher_client: APIClient) -> None:
    response = researcher_client.post(SETS, [context("c1", "Hi")], format="json")

    assert response.status_code == 400
    assert "name" in response.json()["detail"]


# --- locked sets --------------------------------------------------------------------------------


def test_deleting_a_locked_set_is_a_409_and_it_stays(researcher_client: APIClient) -> None:
    locked = saved_set("mtb", locked=True)
    unlocked = saved_set("scratch")

    refused = researcher_client.delete(f"{SETS}{locked.pk}/")
    deleted = researcher_client.delete(f"{SETS}{unlocked.pk}/")

    assert refused.status_code == 409
    assert "is locked" in refused.json()["detail"]
    assert deleted.status_code == 204
    assert list(EvaluationSet.objects.values_list("name", flat=True)) == ["mtb"]
    assert researcher_client.get(f"{SETS}{locked.pk}/").json()["locked_at"] is not None


# --- roles --------------------------------------------------------------------------------------


def test_a_crowdworker_may_neither_read_nor_import_sets(
    api_client: APIClient, users: dict[Role, Any]
) -> None:
    evaluation_set = saved_set()
    api_client.force_authenticate(users[Role.CROWDWORKER])

    assert api_client.get(SETS).status_code == 403
    assert api_client.get(f"{SETS}{evaluation_set.pk}/").status_code == 403
    posted = api_client.post(SETS, {"name": "x", "contexts": [context("c1", "Hi")]}, format="json")
    assert posted.status_code == 403
    assert api_client.delete(f"{SETS}{evaluation_set.pk}/").status_code == 403
    assert EvaluationSet.objects.count() == 1


def test_anonymous_requests_are_401(api_client: APIClient) -> None:
    evaluation_set = saved_set()

    assert api_client.get(SETS).status_code == 401
    assert (
        api_client.post(SETS, {"name": "x", "contexts": [context("c1", "Hi")]}, format="json").status_code
        == 401
    )
    assert api_client.delete(f"{SETS}{evaluation_set.pk}/").status_code == 401
    assert EvaluationSet.objects.count() == 1


def test_an_admin_imports_sets_too(api_client: APIClient, users: dict[Role, Any]) -> None:
    api_client.force_authenticate(users[Role.ADMIN])

    response = api_client.post(SETS, {"name": "mtb", "contexts": [context("c1", "Hi")]}, format="json")

    assert response.status_code == 201


# --- the admin ----------------------------------------------------------------------------------


def jsonl_upload(*contexts: dict[str, Any]) -> SimpleUploadedFile:
    content = "".join(json.dumps(c) + "\n" for c in contexts).encode()
    return SimpleUploadedFile("mtb.jsonl", content, content_type="application/x-ndjson")


def test_a_researcher_imports_a_file_in_the_admin(client: Any, users: dict[Role, Any]) -> None:
    client.force_login(users[Role.RESEARCHER])
    add = reverse("admin:dialogs_evaluationset_add")

    page = client.get(add)
    response = client.post(
        add,
        {"name": "mtb", "description": "", "file": jsonl_upload(context("c1", "Hi"), context("c2", "Yo"))},
    )

    assert page.status_code == 200
    assert b'enctype="multipart/form-data"' in page.content
    evaluation_set = EvaluationSet.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:dialogs_evaluationset_change", args=[evaluation_set.pk])
    assert (evaluation_set.name, evaluation_set.context_count, evaluation_set.source) == (
        "mtb",
        2,
        "mtb.jsonl",
    )
    assert evaluation_set.created_by == users[Role.RESEARCHER]


def test_a_bad_file_in_the_admin_shows_every_bad_line_and_writes_nothing(
    client: Any, users: dict[Role, Any]
) -> None:
    client.force_login(users[Role.RESEARCHER])

    response = client.post(
        reverse("admin:dialogs_evaluationset_add"),
        {
            "name": "mtb",
            "file": jsonl_upload(
                context("c1", "Hi", purpose="chitchat"), context("c2", "Hi", purpose="role")
            ),
        },
    )

    assert response.status_code == 200
    assert "line 1: purpose: unknown value" in response.content.decode()
    assert "line 2: role: missing" in response.content.decode()
    assert EvaluationSet.objects.count() == 0


def test_the_admin_deletes_an_unlocked_set_and_offers_no_delete_for_a_locked_one(
    client: Any, users: dict[Role, Any]
) -> None:
    client.force_login(users[Role.RESEARCHER])
    locked, unlocked = saved_set("mtb", locked=True), saved_set("scratch")

    locked_page = client.get(reverse("admin:dialogs_evaluationset_change", args=[locked.pk]))
    refused = client.post(reverse("admin:dialogs_evaluationset_delete", args=[locked.pk]), {"post": "yes"})
    deleted = client.post(reverse("admin:dialogs_evaluationset_delete", args=[unlocked.pk]), {"post": "yes"})

    assert locked_page.status_code == 200
    assert reverse("admin:dialogs_evaluationset_delete", args=[locked.pk]) not in locked_page.content.decode()
    assert "1 contexts" in locked_page.content.decode()
    assert refused.status_code == 403
    assert deleted.status_code == 302
    assert list(EvaluationSet.objects.values_list("name", flat=True)) == ["mtb"]


def test_the_admin_shows_a_sets_contexts_read_only(client: Any, users: dict[Role, Any]) -> None:
    client.force_login(users[Role.RESEARCHER])
    evaluation_set = saved_set("mtb", "Do you like jazz?")
    evaluation_context = evaluation_set.contexts.get()

    listing = client.get(
        reverse("admin:dialogs_evaluationcontext_changelist"),
        {"evaluation_set__id__exact": evaluation_set.pk},
    )
    page = client.get(reverse("admin:dialogs_evaluationcontext_change", args=[evaluation_context.pk]))

    assert listing.status_code == 200
    assert "Do you like jazz?" in listing.content.decode()
    assert page.status_code == 200
    assert "Do you like jazz?" in page.content.decode()
    assert b'type="submit" value="Save"' not in page.content
