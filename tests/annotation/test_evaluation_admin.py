"""The admin pages of an evaluation set's crowd work (Campaigns → Evaluation sets): its responders
and campaigns, "Start human baseline", "Compare two versions", "Put new responses up for rating"."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotation.models import Campaign
from annotation.services import evaluations
from dialogs.models import HUMAN_RESPONDER
from groundwork.roles import Role
from tests.annotation.evaluation_helpers import answer_all, make_set

pytestmark = pytest.mark.django_db


def set_url(evaluation_set, action: str = "") -> str:
    name = {"": "evaluation_set", "baseline": "human_baseline", "compare": "compare", "enqueue": "enqueue"}
    return reverse(f"admin:annotation_campaign_{name[action]}", args=[evaluation_set.pk])


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_a_set_page_shows_responders_and_campaigns_and_starts_a_human_baseline(role, client, users) -> None:
    evaluation_set = make_set(contexts=3)
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    client.force_login(users[role])

    listing = client.get(reverse("admin:annotation_campaign_changelist")).content.decode()
    assert reverse("admin:annotation_campaign_evaluation_sets") in listing
    sets = client.get(reverse("admin:annotation_campaign_evaluation_sets")).content.decode()
    assert set_url(evaluation_set) in sets
    page = client.get(set_url(evaluation_set)).content.decode()
    assert "mtb v1 · SSI" in page
    assert "gw-1" in page  # admins see who answered; raters never do
    response = client.post(set_url(evaluation_set, "baseline"))

    assert response.status_code == 302
    baseline = Campaign.objects.get(evaluation_set=evaluation_set, kind=Campaign.Kind.HUMAN_RESPONSE)
    assert baseline.items.count() == 3
    assert baseline.created_by == users[role]
    assert "3 context(s) added to write" in client.get(response["Location"]).content.decode()


def test_compare_two_versions_from_the_set_page(client, users) -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, "gw-1")
    answer_all(evaluation_set, HUMAN_RESPONDER)
    client.force_login(users[Role.ADMIN])

    same = client.post(set_url(evaluation_set, "compare"), {"responder_a": "gw-1", "responder_b": "gw-1"})
    assert same.status_code == 200
    assert "Choose two different responders to compare." in same.content.decode()
    response = client.post(
        set_url(evaluation_set, "compare"), {"responder_a": "gw-1", "responder_b": HUMAN_RESPONDER}
    )

    assert response.status_code == 302
    pairwise = Campaign.objects.get(evaluation_set=evaluation_set, kind=Campaign.Kind.PAIRWISE)
    assert (pairwise.filters["responder_a"], pairwise.filters["responder_b"]) == ("gw-1", HUMAN_RESPONDER)
    assert pairwise.items.count() == 2
    assert "gw-1 vs Human baseline" in client.get(set_url(evaluation_set)).content.decode()


def test_put_new_responses_up_for_rating_from_the_set_page(client, users) -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, "gw-1")
    client.force_login(users[Role.ADMIN])

    response = client.post(set_url(evaluation_set, "enqueue"), follow=True)

    assert "Responses put up for rating: 2 to “mtb v1 · SSI”." in response.content.decode()
    again = client.post(set_url(evaluation_set, "enqueue"), follow=True)
    assert "Every response of this set is up for rating already." in again.content.decode()


def test_the_actions_need_the_evaluate_permission_and_a_post(client, users) -> None:
    evaluation_set = make_set(contexts=1)
    client.force_login(users[Role.ADMIN])
    assert client.get(set_url(evaluation_set, "baseline")).status_code == 405

    client.force_login(users[Role.CROWDWORKER])  # not staff: the admin sends them to log in
    assert client.post(set_url(evaluation_set, "baseline")).status_code == 302
    assert not Campaign.objects.exists()


def test_an_evaluation_campaign_links_to_its_set(client, users) -> None:
    evaluation_set = make_set(contexts=1)
    answer_all(evaluation_set, "gw-1")
    campaign = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)[0].campaign
    client.force_login(users[Role.RESEARCHER])

    page = client.get(reverse("admin:annotation_campaign_change", args=[campaign.pk])).content.decode()

    assert f'href="{set_url(evaluation_set)}"' in page


def test_human_baseline_and_side_by_side_campaign_pages_render(client, users) -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, "gw-1")
    answer_all(evaluation_set, "gw-2")
    baseline = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None).campaign
    pairwise = evaluations.pairwise_campaign_create(
        evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-2", created_by=None
    ).campaign
    client.force_login(users[Role.ADMIN])

    for campaign in (baseline, pairwise):
        page = client.get(reverse("admin:annotation_campaign_change", args=[campaign.pk]))
        assert page.status_code == 200
        assert campaign.name in page.content.decode()
    add = client.get(reverse("admin:annotation_campaign_add")).content.decode()
    assert 'value="human_response"' not in add  # made from the set's page only
    assert 'value="pairwise"' not in add
