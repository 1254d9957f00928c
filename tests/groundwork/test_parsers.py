"""Request bodies over HTTP (``groundwork.parsers``): too deeply nested JSON, bodies over the caps,
and addresses nothing answers are refused with a JSON 4xx that says what is wrong, never a 500 or
an HTML page; imports as large as their documented line limits go through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rest_framework.test import APIClient

from dialogs.models import Dialog
from groundwork.accounts import api_token_for
from groundwork.jsonl import MAX_JSON_DEPTH
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from toolset.models import Document

pytestmark = pytest.mark.django_db

# 100,000 levels: far past Python's recursion limit, which json.loads hits after ~1,000.
DEEP = b"[" * 100_000 + b"]" * 100_000


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def client_as(users: dict[Role, Any], role: Role) -> APIClient:
    """A token client, as outside clients call the API (no test-only authentication)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_for(user=users[role])}")
    return client


def assert_json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response.content[:300]
    return response.json()


# --- nesting --------------------------------------------------------------------------------


def test_deeply_nested_json_on_the_token_endpoint_is_a_400_that_says_so(api_client: APIClient) -> None:
    response = api_client.post("/api/v1/auth/token/", DEEP, content_type="application/json")

    body = assert_json_error(response, 400)
    assert f"nested more than {MAX_JSON_DEPTH} levels" in body["detail"]


def test_deeply_nested_json_on_a_submission_is_a_400(users: dict[Role, Any]) -> None:
    ssi_campaign(items=1)
    worker = client_as(users, Role.CROWDWORKER)
    assignment = worker.get("/api/v1/tasks/next").json()["assignment_id"]

    response = worker.post(f"/api/v1/assignments/{assignment}/submit", DEEP, content_type="application/json")

    assert f"nested more than {MAX_JSON_DEPTH} levels" in assert_json_error(response, 400)["detail"]


@pytest.mark.parametrize(
    "url", ["/api/v1/dialogs/", "/api/v1/toolset/documents", "/api/v1/campaigns/{campaign}/judgments"]
)
def test_deeply_nested_json_on_an_import_is_a_400(url: str, users: dict[Role, Any]) -> None:
    url = url.format(campaign=ssi_campaign(items=1).pk)
    admin = client_as(users, Role.ADMIN)

    response = admin.post(url, DEEP, content_type="application/json")

    assert f"nested more than {MAX_JSON_DEPTH} levels" in assert_json_error(response, 400)["detail"]


@pytest.mark.parametrize(
    "url", ["/api/v1/dialogs/", "/api/v1/toolset/documents", "/api/v1/campaigns/{campaign}/judgments"]
)
def test_a_deeply_nested_jsonl_line_is_refused_with_its_line(url: str, users: dict[Role, Any]) -> None:
    url = url.format(campaign=ssi_campaign(items=1).pk)
    admin = client_as(users, Role.ADMIN)

    response = admin.post(url, b"\n" + DEEP + b"\n", content_type="application/x-ndjson")

    [error] = assert_json_error(response, 400)["errors"]
    assert error["line"] == 2
    assert error["field"] == "(json)"
    assert f"nested more than {MAX_JSON_DEPTH} levels" in error["message"]


def test_nesting_is_bounded_below_the_recursion_limit_too(users: dict[Role, Any]) -> None:
    """Deep enough to pass json.loads, too deep to store or render safely (json.dumps, jsonb)."""
    admin = client_as(users, Role.ADMIN)
    dialog = {"id": "deep", "purpose": "quality", "turns": [{"speaker": "user", "text": "Hi"}]}

    just_right = admin.post(
        "/api/v1/dialogs/", {**dialog, "meta": {"x": nested(MAX_JSON_DEPTH - 2)}}, format="json"
    )
    too_deep = admin.post(
        "/api/v1/dialogs/",
        {**dialog, "id": "deeper", "meta": {"x": nested(MAX_JSON_DEPTH - 1)}},
        format="json",
    )

    assert just_right.status_code == 201, just_right.content
    assert f"nested more than {MAX_JSON_DEPTH} levels" in assert_json_error(too_deep, 400)["detail"]
    assert list(Dialog.objects.values_list("external_id", flat=True)) == ["deep"]


# --- size caps ------------------------------------------------------------------------------


def document(url: str, text: str) -> dict[str, str]:
    return {"id": "1", "url": url, "title": url.rsplit("/", 1)[1], "text": text}


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json"])
def test_an_11_mb_document_import_within_the_line_limit_is_imported(
    content_type: str, users: dict[Role, Any], settings: Any
) -> None:
    """Over Django's 2.5 MB request cap, under the documented 10 MB line limit and the import cap."""
    big = document("https://example.org/Big", "word " * 1_980_000)  # a 9.9 MB line
    small = document("https://example.org/Small", "small " * 190_000)  # 1.1 MB
    if content_type == "application/json":
        body = json.dumps([big, small]).encode()
    else:
        body = (json.dumps(big) + "\n" + json.dumps(small) + "\n").encode()
    assert 11_000_000 <= len(body) < settings.IMPORT_MAX_BODY_BYTES
    assert len(json.dumps(big).encode()) < settings.TOOLSET_IMPORT_MAX_LINE_BYTES

    response = client_as(users, Role.ADMIN).post("/api/v1/toolset/documents", body, content_type=content_type)

    assert response.status_code == 201, response.content[:300]
    assert response.json() == {"created": 2, "updated": 0, "unchanged": 0}
    assert len(Document.objects.get(url="https://example.org/Big").body) == len("word " * 1_980_000) - 1


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json"])
def test_an_import_body_over_the_import_cap_is_a_json_413(
    content_type: str, users: dict[Role, Any], settings: Any
) -> None:
    settings.IMPORT_MAX_BODY_BYTES = 3_000_000
    line = json.dumps(document("https://example.org/A", "word " * 700_000))  # 3.5 MB
    body = (f"[{line}]" if content_type == "application/json" else line).encode()

    response = client_as(users, Role.ADMIN).post("/api/v1/toolset/documents", body, content_type=content_type)

    detail = assert_json_error(response, 413)["detail"]
    assert f"{len(body):,} bytes, over the limit of 3,000,000 bytes" in detail
    assert "IMPORT_MAX_BODY_BYTES" in detail
    assert not Document.objects.exists()


def test_a_json_body_over_the_request_cap_is_a_json_413(users: dict[Role, Any]) -> None:
    """Not an import: Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) stays the cap."""
    body = json.dumps({"query": "x" * 3_000_000, "session": "s"}).encode()

    response = client_as(users, Role.CROWDWORKER).post(
        "/api/v1/toolset/query", body, content_type="application/json"
    )

    assert "over the limit of 2,621,440 bytes" in assert_json_error(response, 413)["detail"]


def test_a_form_body_over_the_request_cap_is_a_json_413(users: dict[Role, Any]) -> None:
    body = "purpose=quality&text=" + "x" * 3_000_000

    response = client_as(users, Role.CROWDWORKER).post(
        "/api/v1/chats/", body, content_type="application/x-www-form-urlencoded"
    )

    assert "over the limit of 2,621,440 bytes" in assert_json_error(response, 413)["detail"]


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/no-such-thing/",
        "/api/v1/chats/99999999999999999999/",
        "/api/v1/campaigns/9223372036854775808/consensus",  # 2**63: one past the largest id
    ],
)
def test_an_address_nothing_answers_under_the_api_is_a_json_404(url: str, users: dict[Role, Any]) -> None:
    response = client_as(users, Role.ADMIN).get(url)

    assert assert_json_error(response, 404) == {"detail": "Not found."}
