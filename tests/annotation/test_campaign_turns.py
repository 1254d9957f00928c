"""Which turns a campaign rates: each model turn is credited to the model version that wrote it,
and fallback replies (every candidate predicted unsafe) are left out unless asked for — through
the command and the admin's add form alike (the service is tested with chats in test_chat.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotation.models import Campaign
from dialogs.services import dialogs_import, parse_objects
from groundwork.roles import Role

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def two_versions() -> None:
    """A chat gw-1 answered, then gw-2, whose last answer was the fallback reply."""
    turns = [
        {"speaker": "user", "text": "Hi"},
        {"speaker": "model", "text": "Hello.", "model_version": "gw-1"},
        {"speaker": "user", "text": "Tea?"},
        {"speaker": "model", "text": "Green, please.", "model_version": "gw-2"},
        {"speaker": "user", "text": "Say something awful."},
        {"speaker": "model", "text": "Let us talk about tea.", "model_version": "gw-2", "fallback": "unsafe"},
    ]
    dialogs_import(records=parse_objects([{"id": "chat", "purpose": "safety", "turns": turns}]), source="t")


def keys(name: str) -> list[str]:
    return sorted(Campaign.objects.get(name=name).items.values_list("key", flat=True))


def test_create_campaign_takes_one_model_versions_turns_and_fallbacks_only_when_asked() -> None:
    out = io.StringIO()
    call_command("create_campaign", "--kind=ssi", "--name=gw-1", "--model-version=gw-1", stdout=out)
    call_command("create_campaign", "--kind=ssi", "--name=gw-2", "--model-version=gw-2", stdout=out)
    call_command(
        "create_campaign",
        "--kind=ssi",
        "--name=gw-2 all",
        "--model-version=gw-2",
        "--include-fallback",
        stdout=out,
    )

    assert keys("gw-1") == ["chat#1"]
    assert keys("gw-2") == ["chat#3"]
    assert keys("gw-2 all") == ["chat#3", "chat#5"]


def test_the_admin_add_form_has_the_fallback_option(client: Any, users: dict[Role, Any]) -> None:
    client.force_login(users[Role.ADMIN])
    add = reverse("admin:annotation_campaign_add")

    assert 'name="include_fallback"' in client.get(add).content.decode()
    client.post(add, {"name": "without", "kind": "safety"})
    client.post(add, {"name": "with", "kind": "safety", "include_fallback": "on"})

    assert keys("without") == ["chat#1", "chat#3"]
    assert keys("with") == ["chat#1", "chat#3", "chat#5"]
    assert Campaign.objects.get(name="with").filters["include_fallback"] is True
