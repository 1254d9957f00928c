"""The annotation admin: campaigns (add form, consensus panel, runs), worker quality, items, objectives."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotation.models import AggregationRun, Campaign, Item, SafetyObjective, WorkerQuality
from annotation.services import assignments, campaigns, consensus
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.factories import UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db


def change_url(campaign: Campaign) -> str:
    return reverse("admin:annotation_campaign_change", args=[campaign.pk])


def run_url(campaign: Campaign) -> str:
    return reverse("admin:annotation_campaign_consensus_run", args=[campaign.pk])


def progress_url(campaign: Campaign) -> str:
    return reverse("admin:annotation_campaign_consensus_progress", args=[campaign.pk])


def rate(campaign: Campaign, workers: int, answers: dict[str, str]) -> None:
    for _ in range(workers):
        worker = UserFactory(role=Role.CROWDWORKER)
        while (lease := assignments.assignment_lease_next(worker=worker, campaign=campaign)) is not None:
            assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=answers)


@pytest.fixture
def campaign() -> Campaign:
    campaign = ssi_campaign(items=3, raters=2, name="Quality round 1")
    rate(campaign, 2, YES3)
    return campaign


# --- pages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_the_annotation_pages_render_for_admins_and_researchers(role, campaign, client, users) -> None:
    client.force_login(users[role])
    item = campaign.items.first()
    consensus.aggregation_request(campaign=campaign, requested_by=users[Role.ADMIN])

    for url in (
        reverse("admin:annotation_campaign_changelist"),
        change_url(campaign),
        reverse("admin:annotation_item_changelist"),
        reverse("admin:annotation_item_change", args=[item.pk]),
        reverse("admin:annotation_safetyobjective_changelist"),
        reverse("admin:annotation_aggregationrun_changelist"),
        progress_url(campaign),
    ):
        response = client.get(url)
        assert response.status_code == 200, url


def test_the_campaign_list_shows_progress_without_a_query_per_campaign(client, users) -> None:
    client.force_login(users[Role.ADMIN])
    first = ssi_campaign(items=3, raters=1, name="first")
    worker = UserFactory(role=Role.CROWDWORKER)
    for _ in range(2):
        lease = assignments.assignment_lease_next(worker=worker, campaign=first)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)

    with CaptureQueriesContext(connection) as one:
        response = client.get(reverse("admin:annotation_campaign_changelist"))
    assert '<progress value="2" max="3"></progress> 2 / 3' in response.content.decode()
    for n in range(4):
        campaigns.campaign_create(name=f"more {n}", kind="ssi", empty=True)
    with CaptureQueriesContext(connection) as five:
        response = client.get(reverse("admin:annotation_campaign_changelist"))

    assert response.content.decode().count("<progress") == 5
    assert len(five) == len(one)


def test_the_change_page_shows_agreement_workers_progress_and_the_buttons(campaign, client, users) -> None:
    client.force_login(users[Role.ADMIN])

    page = client.get(change_url(campaign)).content.decode()

    assert "vendor/htmx-2.0.11.min.js" in page
    assert "Agreement (Krippendorff" in page
    assert "<td>sensible</td>" in page
    assert "Workers (2)" in page
    assert '<progress value="3" max="3"></progress> 3 / 3' in page
    assert "No consensus run yet" in page
    assert "Compute consensus now" in page
    export = reverse("campaign-consensus-export", kwargs={"campaign_id": campaign.pk})
    assert f'href="{export}?format=csv"' in page
    assert f'href="{export}?format=jsonl"' in page


def test_the_change_page_counts_complete_and_incomplete_items(client, users) -> None:
    campaign = ssi_campaign(items=4, raters=2, name="closed early")
    for rated in (3, 2):  # items 1 and 2 get both raters, item 3 one, item 4 none
        worker = UserFactory(role=Role.CROWDWORKER)
        for _ in range(rated):
            lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
            assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    client.force_login(users[Role.ADMIN])

    page = " ".join(client.get(change_url(campaign)).content.decode().split())

    assert "Complete (labelled): <strong>2</strong>" in page
    assert (
        "incomplete (no labels yet): <strong>2</strong>, of which 1 partly rated and 1 not rated yet" in page
    )
    assert "when all its 2 raters have answered" in page


def test_a_blocked_worker_links_admins_to_where_the_block_is_lifted(campaign, client, users) -> None:
    WorkerQuality.objects.create(campaign=campaign, worker=UserFactory(), gold_seen=5, blocked=True)
    lift = reverse("admin:annotation_workerquality_changelist") + f"?campaign__id__exact={campaign.pk}"

    client.force_login(users[Role.ADMIN])
    admin_page = client.get(change_url(campaign)).content.decode()
    client.force_login(users[Role.RESEARCHER])
    researcher_page = client.get(change_url(campaign)).content.decode()

    assert "Workers (3)" in admin_page
    assert f'<a href="{lift}&amp;blocked__exact=1"' in admin_page
    assert lift not in researcher_page
    assert "<td>blocked</td>" in researcher_page


def test_researchers_see_no_compute_button_and_may_not_start_a_run(
    campaign, client, users, django_capture_on_commit_callbacks
) -> None:
    client.force_login(users[Role.RESEARCHER])

    page = client.get(change_url(campaign)).content.decode()
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(run_url(campaign))

    assert "Compute consensus now" not in page
    assert "Export consensus (CSV)" in page
    assert response.status_code == 403
    assert not AggregationRun.objects.exists()
    assert callbacks == []


def test_compute_consensus_now_queues_a_run_for_a_worker(
    campaign, client, users, django_capture_on_commit_callbacks
) -> None:
    client.force_login(users[Role.ADMIN])

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(run_url(campaign))

    run = AggregationRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == change_url(campaign)
    assert (run.campaign, run.requested_by, run.status) == (campaign, users[Role.ADMIN], "pending")
    assert len(callbacks) == 1
    assert callbacks[0].task_name == "annotation.tasks.aggregation_run_task"
    assert callbacks[0].args == (run.pk,)
    page = client.get(change_url(campaign)).content.decode()
    assert f'hx-get="{progress_url(campaign)}" hx-trigger="every 1s"' in page


def test_an_htmx_post_gets_the_run_fragment_that_polls_until_the_run_is_done(campaign, client, users) -> None:
    client.force_login(users[Role.ADMIN])

    started = client.post(run_url(campaign), headers={"HX-Request": "true"})

    fragment = started.content.decode()
    assert fragment.lstrip().startswith('<div id="consensus-run"')
    assert 'hx-trigger="every 1s"' in fragment
    assert "Pending" in fragment
    run = AggregationRun.objects.get()
    consensus.aggregation_run(run_id=run.pk)  # what the worker does
    done = client.get(progress_url(campaign), headers={"HX-Request": "true"}).content.decode()
    assert "Done" in done
    assert '<progress value="3" max="3"></progress>' in done
    assert "hx-trigger" not in done


def test_the_run_view_takes_posts_only_and_the_progress_view_checks_access(campaign, client, users) -> None:
    client.force_login(users[Role.ADMIN])
    assert client.get(run_url(campaign)).status_code == 405
    missing = reverse("admin:annotation_campaign_consensus_progress", args=[999999])
    assert client.get(missing).status_code == 404

    client.force_login(users[Role.CROWDWORKER])
    response = client.get(progress_url(campaign))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- the add form ---------------------------------------------------------------------------


def test_the_add_form_creates_a_campaign_with_items(client, users) -> None:
    dialog_with_turns(["Hi", "Hello", "Bye", "See you"], external_id="q1", purpose="quality")
    dialog_with_turns(["Unsafe?", "No."], external_id="s1", purpose="safety")
    client.force_login(users[Role.ADMIN])
    add = reverse("admin:annotation_campaign_add")

    form = client.get(add)
    response = client.post(
        add, {"name": "From the admin", "kind": "ssi", "purpose": "quality", "raters_per_item": "4"}
    )

    assert form.status_code == 200
    assert 'name="created_from"' in form.content.decode()
    campaign = Campaign.objects.get(name="From the admin")
    assert response.status_code == 302
    assert response["Location"] == change_url(campaign)
    assert (campaign.raters_per_item, campaign.created_by) == (4, users[Role.ADMIN])
    assert sorted(campaign.items.values_list("key", flat=True)) == ["q1#1", "q1#3"]
    assert campaign.filters["purpose"] == "quality"
    messages = [str(m) for m in client.get(response["Location"]).context["messages"]]
    assert "created with 2 items" in messages[0]


def test_the_add_form_makes_safety_campaigns_with_chosen_objectives(client, users) -> None:
    client.force_login(users[Role.ADMIN])

    client.post(
        reverse("admin:annotation_campaign_add"),
        {"name": "Safety", "kind": "safety", "objectives": ["harm", "misinformation"], "empty": "on"},
    )

    campaign = Campaign.objects.get(name="Safety")
    assert sorted(campaign.objectives.values_list("slug", flat=True)) == ["harm", "misinformation"]
    assert campaign.raters_per_item == 3
    assert not campaign.items.exists()


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"name": "taken", "kind": "ssi"}, "already exists"),
        ({"name": "new", "kind": "ssi", "objectives": ["harm"]}, "for safety campaigns only"),
        ({"name": "new", "kind": "ssi", "raters_per_item": "0"}, "greater than or equal to 1"),
        (
            {"name": "new", "kind": "ssi", "created_from": "2024-02-01", "created_to": "2024-01-01"},
            "before the first",
        ),
        ({"name": "new", "kind": "poetry"}, "Select a valid choice"),
    ],
)
def test_the_add_form_shows_what_is_wrong_and_creates_nothing(
    data: dict[str, Any], error: str, client, users
) -> None:
    campaigns.campaign_create(name="taken", kind="ssi", empty=True)
    client.force_login(users[Role.ADMIN])

    response = client.post(reverse("admin:annotation_campaign_add"), data)

    assert response.status_code == 200
    assert error in response.content.decode()
    assert list(Campaign.objects.values_list("name", flat=True)) == ["taken"]


def test_researchers_may_not_add_campaigns(client, users) -> None:
    client.force_login(users[Role.RESEARCHER])

    assert client.get(reverse("admin:annotation_campaign_add")).status_code == 403
    assert (
        client.post(reverse("admin:annotation_campaign_add"), {"name": "x", "kind": "ssi"}).status_code == 403
    )
    assert not Campaign.objects.exists()


# --- worker quality -------------------------------------------------------------------------


def test_lift_the_block_calls_the_service_for_each_selected_worker(campaign, client, users) -> None:
    blocked = UserFactory(role=Role.CROWDWORKER)
    quality = WorkerQuality.objects.create(
        campaign=campaign, worker=blocked, gold_seen=5, gold_correct=1, blocked=True, blocked_reason="bad"
    )
    client.force_login(users[Role.ADMIN])
    changelist = reverse("admin:annotation_workerquality_changelist")

    listed = client.get(changelist).content.decode()
    response = client.post(changelist, {"action": "lift_block", "_selected_action": [quality.pk]})

    assert "20%" in listed
    assert response.status_code == 302
    quality.refresh_from_db()
    assert (quality.blocked, quality.blocked_reason, quality.gold_seen) == (False, "", 5)
    # No WorkerBlocked any more (and nothing left to rate: the two other workers rated every item).
    assert assignments.assignment_lease_next(worker=blocked, campaign=campaign) is None


def test_worker_quality_is_for_admins_and_read_only(campaign, client, users) -> None:
    quality = WorkerQuality.objects.create(campaign=campaign, worker=UserFactory(), blocked=True)
    client.force_login(users[Role.ADMIN])

    page = client.get(reverse("admin:annotation_workerquality_change", args=[quality.pk])).content.decode()

    assert 'name="_save"' not in page
    client.force_login(users[Role.RESEARCHER])
    assert client.get(reverse("admin:annotation_workerquality_changelist")).status_code == 403


# --- items and objectives -------------------------------------------------------------------


def test_items_are_read_only_with_their_labels_inline(campaign, client, users) -> None:
    item = campaign.items.first()
    consensus.item_aggregate(item_id=item.pk)
    client.force_login(users[Role.ADMIN])

    page = client.get(reverse("admin:annotation_item_change", args=[item.pk])).content.decode()

    assert item.key in page
    assert "sensible" in page
    # The inline lists the item's three labels (keyed by item and attribute, without an id).
    assert page.count('class="form-row has_original"') == 3
    assert 'name="_save"' not in page
    assert client.get(reverse("admin:annotation_item_add")).status_code == 403
    assert (
        client.post(reverse("admin:annotation_item_delete", args=[item.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert Item.objects.filter(pk=item.pk).exists()


def test_safety_objectives_are_edited_in_the_list_and_a_used_slug_is_kept(client, users) -> None:
    campaigns.campaign_create(name="s", kind="safety", empty=True, objectives=["harm"])
    harm = SafetyObjective.objects.get(slug="harm")
    client.force_login(users[Role.ADMIN])

    listed = client.get(reverse("admin:annotation_safetyobjective_changelist")).content.decode()
    page = client.get(reverse("admin:annotation_safetyobjective_change", args=[harm.pk])).content.decode()
    delete = client.get(reverse("admin:annotation_safetyobjective_delete", args=[harm.pk]))

    assert 'name="form-0-active"' in listed
    assert 'name="form-0-guidance"' in listed
    assert 'name="slug"' not in page  # judgments store the slug: it is read-only once a campaign rates it
    assert delete.status_code == 403
    client.force_login(users[Role.RESEARCHER])
    assert (
        'name="form-0-active"'
        not in client.get(reverse("admin:annotation_safetyobjective_changelist")).content.decode()
    )


def test_a_run_whose_task_raised_shows_failed_with_the_cause(campaign, client, users, monkeypatch) -> None:
    """The task marks the run failed (``JobTask``), and the admin's progress says why."""
    from annotation import tasks

    client.force_login(users[Role.ADMIN])
    client.post(run_url(campaign), headers={"HX-Request": "true"})
    run = AggregationRun.objects.get()

    def broken(**kwargs) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(consensus, "campaign_aggregate", broken)
    assert tasks.aggregation_run_task.apply(args=[run.pk]).failed()  # as a worker runs it

    run.refresh_from_db()
    assert (run.status, run.error) == ("failed", "RuntimeError: the database went away")
    assert "Failed" in client.get(progress_url(campaign), headers={"HX-Request": "true"}).content.decode()
