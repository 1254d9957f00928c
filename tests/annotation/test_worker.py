"""Consensus computed by the real Celery worker process, after commit."""

from __future__ import annotations

import time

import pytest

from annotation.models import AggregationRun, ConsensusLabel
from annotation.services import assignments, consensus
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def eventually(check, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not do it in time")
        time.sleep(0.1)


def test_the_last_judgment_of_an_item_gets_its_consensus_from_the_worker(celery_worker) -> None:
    campaign = ssi_campaign(items=1, raters=3)
    for answers in (YES3, YES3, {"sensible": "no"}):
        worker = UserFactory(role=Role.CROWDWORKER)
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assert not ConsensusLabel.objects.exists()
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)

    eventually(lambda: ConsensusLabel.objects.count() == 3)
    assert dict(ConsensusLabel.objects.values_list("attribute", "label")) == {
        "sensible": 1,
        "specific": 1,
        "interesting": 1,
    }


def test_a_whole_campaign_is_aggregated_by_the_worker_with_progress(celery_worker) -> None:
    campaign = ssi_campaign(items=2, raters=1)
    worker = UserFactory(role=Role.CROWDWORKER)
    for _ in range(2):
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers={"sensible": "no"})
    ConsensusLabel.objects.all().delete()  # as if the rules changed: recompute everything

    run = consensus.aggregation_request(campaign=campaign, requested_by=UserFactory(role=Role.ADMIN))

    eventually(lambda: AggregationRun.objects.get(pk=run.pk).status == AggregationRun.Status.DONE)
    run.refresh_from_db()
    assert (run.done, run.total) == (2, 2)
    assert ConsensusLabel.objects.filter(item__campaign=campaign, label=0).count() == 6
