"""Many raters at once, over real HTTP, each request on its own database connection."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from django.db.models import Count

from annotation.models import Assignment, Item, Judgment
from groundwork.accounts import api_token_for
from groundwork.roles import Role
from tests.annotation.helpers import ssi_campaign
from tests.factories import UserFactory
from tests.load.helpers import call

pytestmark = pytest.mark.django_db(transaction=True)

CLIENTS = 16
ITEMS = 30
RATERS = 5


def test_parallel_raters_fill_the_campaign_exactly(live_server) -> None:
    campaign = ssi_campaign(items=ITEMS, raters=RATERS)
    tokens = [api_token_for(user=UserFactory(role=Role.CROWDWORKER)) for _ in range(CLIENTS)]
    acknowledged: list[int] = []
    unexpected: list[tuple[int, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)
    deadline = time.monotonic() + 120

    def rater(token: str) -> None:
        start.wait()
        status, task = call(live_server.url, token, "GET", f"/api/v1/tasks/next?campaign={campaign.pk}")
        while status == 200 and task and time.monotonic() < deadline:
            answers = {"sensible": "yes", "specific": "yes", "interesting": "no"}
            status, body = call(
                live_server.url,
                token,
                "POST",
                f"/api/v1/assignments/{task['assignment_id']}/submit",
                {"answers": answers},
            )
            if status != 201:
                with lock:
                    unexpected.append((status, body))
                return
            with lock:
                acknowledged.append(task["assignment_id"])
            task = body["next"]
            status = 200 if task else 204
        if status not in (200, 204):
            with lock:
                unexpected.append((status, task))

    threads = [threading.Thread(target=rater, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)

    assert not unexpected, unexpected[:5]
    submitted = Assignment.objects.filter(item__campaign=campaign, state=Assignment.State.SUBMITTED)
    # Full: every slot of every item was filled, and never more than RATERS per item.
    per_item = Counter(dict(submitted.values_list("item_id").annotate(n=Count("id")).order_by()))
    assert sorted(set(per_item.values())) == [RATERS]
    assert len(per_item) == ITEMS
    assert list(
        Item.objects.filter(campaign=campaign).values_list("open_slots", flat=True).order_by().distinct()
    ) == [0]
    # No worker rated an item twice (also a database constraint).
    pairs = submitted.values_list("item_id", "worker_id")
    assert len(set(pairs)) == pairs.count()
    # Every acknowledged submission is stored, with its three judgments.
    assert sorted(acknowledged) == sorted(submitted.values_list("id", flat=True))
    assert Judgment.objects.filter(assignment_id__in=acknowledged).count() == 3 * len(acknowledged)


def test_the_same_submission_sent_at_once_many_times_is_stored_once(live_server) -> None:
    """A client that retries while its first request is still in flight: the requests race to
    store the same lease. One stores it (201); the others get the stored one (200)."""
    campaign = ssi_campaign(items=1, raters=RATERS)
    token = api_token_for(user=UserFactory(role=Role.CROWDWORKER))
    _, task = call(live_server.url, token, "GET", f"/api/v1/tasks/next?campaign={campaign.pk}")
    path = f"/api/v1/assignments/{task['assignment_id']}/submit"
    answers = {"sensible": "yes", "specific": "yes", "interesting": "no"}
    results: list[tuple[int, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def send() -> None:
        start.wait()
        result = call(live_server.url, token, "POST", path, {"answers": answers})
        with lock:
            results.append(result)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert all(body["judgments"] == answers for _, body in results)
    assert Judgment.objects.filter(assignment_id=task["assignment_id"]).count() == 3
    assert Item.objects.get(campaign=campaign).judgment_count == 1
