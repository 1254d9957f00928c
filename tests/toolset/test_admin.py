"""The toolset's admin pages: roles, a read-only tool-call log, the translator's status."""

from __future__ import annotations

from typing import Any

import pytest

from groundwork.roles import Role
from toolset.models import ToolCall

pytestmark = pytest.mark.django_db


def test_admins_edit_documents_researchers_read_them(users: Any, client: Any) -> None:
    client.force_login(users[Role.ADMIN])
    assert client.get("/admin/toolset/document/add/").status_code == 200
    client.force_login(users[Role.RESEARCHER])
    assert client.get("/admin/toolset/document/").status_code == 200
    assert client.get("/admin/toolset/document/add/").status_code == 403


def test_tool_calls_are_read_only_and_the_page_says_why_the_translator_is_silent(
    users: Any, client: Any
) -> None:
    call = ToolCall.objects.create(session="s", tool="search", query="jaguar")
    for role in (Role.ADMIN, Role.RESEARCHER):
        client.force_login(users[role])
        page = client.get("/admin/toolset/toolcall/")
        assert page.status_code == 200
        assert "translator: argostranslate" in page.content.decode()
        assert client.get("/admin/toolset/toolcall/add/").status_code == 403
        assert client.post(f"/admin/toolset/toolcall/{call.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ToolCall.objects.count() == 1
