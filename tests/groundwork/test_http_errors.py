"""Domain errors as HTTP answers (``groundwork.http_errors``): the API's handler, the middleware
that answers an error a page lets out, and the pages that show it in place."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from kombu.exceptions import OperationalError

from annotation.models import AggregationRun
from annotation.services import chats
from groundwork.queueing import Queued
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.factories import UserFactory


class DownBroker:
    def apply_async(self, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.mark.django_db(transaction=True)  # the task is sent after the request's commit, for real
def test_an_admin_button_whose_work_cannot_be_queued_is_a_503_page_and_leaves_no_run(
    client, monkeypatch
) -> None:
    monkeypatch.setattr(Queued, "_signature", lambda self: DownBroker())
    campaign = ssi_campaign(items=1, raters=1)
    client.force_login(UserFactory(role=Role.ADMIN))

    response = client.post(reverse("admin:annotation_campaign_consensus_run", args=[campaign.pk]))

    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    page = response.content.decode()
    assert "Try again shortly" in page
    assert "The task queue is down, so this could not be queued and nothing was saved" in page
    assert not AggregationRun.objects.exists()


@pytest.mark.django_db
def test_another_workers_chat_is_the_not_found_page_for_every_action(client) -> None:
    """``ChatNotFound`` is a 404: the site's page, whichever view or refusal meets it first."""
    chat = chats.chat_start(worker=UserFactory(role=Role.CROWDWORKER), purpose="quality")
    client.force_login(UserFactory(role=Role.CROWDWORKER))

    for method, path, htmx in [
        ("get", f"/work/chat/{chat.pk}/", False),
        ("get", f"/work/chat/{chat.pk}/?after=0", True),
        ("post", f"/work/chat/{chat.pk}/say", True),
        ("post", f"/work/chat/{chat.pk}/retry", False),
        ("post", f"/work/chat/{chat.pk}/finish", False),
    ]:
        headers = {"HX-Request": "true"} if htmx else {}
        response = getattr(client, method)(path, headers=headers)

        assert response.status_code == 404, path
        assert "There is nothing at this address." in response.content.decode(), path
