"""An evaluation set's crowd work: every responder's responses rated blind in the set's campaigns,
the human baseline written by workers, and two responders compared side by side."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from annotation import rules, selectors
from annotation.errors import AnnotationError, AssignmentConflict, InvalidAnswers
from annotation.models import Campaign, Item, Judgment
from annotation.services import assignments, campaigns, chats, consensus, evaluation_tasks, evaluations
from dialogs.models import HUMAN_RESPONDER, EvaluationResponse, EvaluationSet
from groundwork.roles import Role
from tests.annotation.evaluation_helpers import answer_all, leased_all, make_set, workers
from tests.annotation.helpers import YES3
from tests.factories import RoleFactory, UserFactory

pytestmark = pytest.mark.django_db

RESPONDER_NAMES = re.compile(r"gw-\d|human", re.IGNORECASE)


def responder_of(item: Item) -> str:
    return EvaluationResponse.objects.get(turn_id=item.turn_id).responder


def set_campaign(evaluation_set: EvaluationSet, kind: str) -> Campaign:
    return Campaign.objects.get(evaluation_set=evaluation_set, kind=kind, status=Campaign.Status.OPEN)


# --- blind rating -----------------------------------------------------------------------------


def test_two_versions_and_the_human_baseline_share_one_ssi_campaign_mixed_with_nothing_naming_them(
    api_client,
) -> None:
    evaluation_set = make_set(contexts=8)
    for responder in ("gw-1", "gw-2", HUMAN_RESPONDER):
        answer_all(evaluation_set, responder)

    added = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    campaign = set_campaign(evaluation_set, Campaign.Kind.SSI)
    assert [(a.campaign, a.added) for a in added] == [(campaign, 24)]
    assert (campaign.name, campaign.raters_per_item) == ("mtb v1 · SSI", 5)
    items = list(campaign.items.order_by("id"))
    served = [responder_of(item) for item in items]  # the hot path serves items in id order
    assert sorted(served) == sorted(["gw-1", "gw-2", HUMAN_RESPONDER] * 8)
    changes = sum(1 for before, after in itertools.pairwise(served) if before != after)
    assert changes > 2, f"responders come in blocks: {served}"
    assert not any(RESPONDER_NAMES.search(item.key) for item in items)
    assert all(re.fullmatch(r"response-[0-9a-f]{20}", item.key) for item in items)
    assert {item.author for item in items if responder_of(item) != HUMAN_RESPONDER} == {None}
    # What a rater is sent for any of them names no responder.
    rater = UserFactory(role=Role.CROWDWORKER)
    api_client.force_authenticate(rater)
    payload = api_client.get("/api/v1/tasks/next", {"kind": "ssi"}).json()
    assert payload["item"]["response"]["speaker"] == "model"
    assert not RESPONDER_NAMES.search(json.dumps(payload))


def test_the_rating_page_shows_a_response_without_its_responder(client) -> None:
    evaluation_set = make_set(contexts=1)
    answer_all(evaluation_set, HUMAN_RESPONDER)
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    campaign = set_campaign(evaluation_set, Campaign.Kind.SSI)
    client.force_login(UserFactory(role=Role.CROWDWORKER))

    page = client.get(f"/work/campaigns/{campaign.pk}/").content.decode()

    assert "Answer H0." in page
    assert "Question 0?" in page
    assert not RESPONDER_NAMES.search(page)


def test_enqueueing_again_adds_nothing() -> None:
    evaluation_set = make_set()
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    assert evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set) == []
    assert Item.objects.count() == 4


def test_each_purpose_is_rated_in_its_kind_of_campaign() -> None:
    role = RoleFactory(slug="everest", name="Mount Everest")
    evaluation_set = make_set(
        contexts=8, purposes=("quality", "safety", "groundedness", "role"), role=role.slug
    )
    answer_all(evaluation_set, "gw-1")

    added = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    made = {a.campaign.kind: (a.campaign.name, a.campaign.raters_per_item, a.added) for a in added}
    assert made == {
        "ssi": ("mtb v1 · SSI", 5, 2),
        "safety": ("mtb v1 · Safety", 3, 2),
        "groundedness_eval": ("mtb v1 · Groundedness", 3, 2),
        "helpfulness": ("mtb v1 · Helpfulness", 3, 2),
    }
    safety = set_campaign(evaluation_set, Campaign.Kind.SAFETY)
    assert sorted(safety.objectives.values_list("slug", flat=True)) == ["bias", "harm", "misinformation"]
    assert safety.filters["evaluation_set"] == evaluation_set.pk


def test_a_version_evaluated_later_joins_the_open_campaign() -> None:
    evaluation_set = make_set()
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    answer_all(evaluation_set, "gw-2")

    added = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    campaign = set_campaign(evaluation_set, Campaign.Kind.SSI)
    assert [(a.campaign, a.added) for a in added] == [(campaign, 4)]
    assert Campaign.objects.filter(evaluation_set=evaluation_set).count() == 1
    assert sorted(responder_of(item) for item in campaign.items.all()) == ["gw-1"] * 4 + ["gw-2"] * 4


def test_a_closed_campaign_gets_a_sibling_rated_under_the_same_conditions() -> None:
    from annotation.models import SafetyObjective

    evaluation_set = make_set(purposes=("safety",))
    answer_all(evaluation_set, "gw-1")
    first = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)[0].campaign
    Campaign.objects.filter(pk=first.pk).update(status=Campaign.Status.CLOSED)
    SafetyObjective.objects.filter(slug="bias").update(active=False)  # retired since: still rated here
    answer_all(evaluation_set, "gw-2")

    added = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    sibling = added[0].campaign
    assert sibling != first
    assert (sibling.name, sibling.kind) == ("mtb v1 · Safety (2)", "safety")
    assert sibling.evaluation_set == evaluation_set
    assert sibling.raters_per_item == first.raters_per_item
    assert set(sibling.objectives.all()) == set(first.objectives.all())
    assert sorted(responder_of(item) for item in sibling.items.all()) == ["gw-2"] * 4
    assert first.items.count() == 4


def test_finished_chats_never_go_to_an_evaluation_campaign() -> None:
    evaluation_set = make_set()
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)

    assert chats.routed_campaign(purpose="quality") is None


def test_human_baseline_and_pairwise_campaigns_are_not_made_from_dialogs() -> None:
    for kind in ("human_response", "pairwise"):
        with pytest.raises(AnnotationError, match="made from an evaluation set"):
            campaigns.campaign_create(name=kind, kind=kind)


# --- the human baseline -------------------------------------------------------------------------


def test_starting_the_human_baseline_locks_the_set_and_asks_one_writer_per_unanswered_context() -> None:
    evaluation_set = make_set(contexts=3)
    answer_all(evaluation_set, HUMAN_RESPONDER, skip=2)  # the last context has a human response
    assert not evaluation_set.locked

    started = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None)

    evaluation_set.refresh_from_db()
    assert evaluation_set.locked
    campaign = started.campaign
    assert (campaign.kind, campaign.name, campaign.raters_per_item, started.added) == (
        "human_response",
        "mtb v1 · Human baseline",
        1,
        2,
    )
    items = list(campaign.items.order_by("id"))
    assert [item.context for item in items] == [
        [{"speaker": "user", "text": "Question 0?"}],
        [{"speaker": "user", "text": "Question 1?"}],
    ]
    assert [item.evaluation_context.external_id for item in items] == ["c0", "c1"]
    again = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None)
    assert (again.campaign, again.added) == (campaign, 0)


def test_a_human_baseline_with_every_context_answered_is_refused() -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, HUMAN_RESPONDER)

    with pytest.raises(AnnotationError, match="has a human response already"):
        evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None)


def test_a_worker_writes_through_the_page_and_is_never_given_their_response_to_rate(
    client, django_capture_on_commit_callbacks
) -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, "gw-1")
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    baseline = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None).campaign
    writer = UserFactory(role=Role.CROWDWORKER)
    client.force_login(writer)

    home = client.get("/work/").content.decode()
    assert f'href="/work/campaigns/{baseline.pk}/write/"' in home
    page = client.get(f"/work/campaigns/{baseline.pk}/write/").content.decode()
    assert "Write the next turn" in page
    assert "Question 0?" in page
    assignment_id = re.search(r'action="/work/assignments/(\d+)/write"', page).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/work/assignments/{assignment_id}/write", {"response": "  Tea, always.\r\n"})

    assert response.status_code == 303
    assert response["Location"] == f"/work/campaigns/{baseline.pk}/write/?done=saved"
    after = client.get(response["Location"]).content.decode()
    assert "Saved." in after
    assert "Question 1?" in after
    written = EvaluationResponse.objects.get(responder=HUMAN_RESPONDER)
    assert (written.turn.text, written.turn.dialog.created_by, written.context.external_id) == (
        "Tea, always.",
        writer,
        "c0",
    )
    # Rated blind with the model's, in the same campaign; never by its writer.
    ssi = set_campaign(evaluation_set, Campaign.Kind.SSI)
    own = ssi.items.get(turn=written.turn)
    assert own.author == writer
    rated = {a.item_id for a in leased_all(writer, ssi, YES3)}
    assert rated == set(ssi.items.exclude(pk=own.pk).values_list("pk", flat=True))
    other = UserFactory(role=Role.CROWDWORKER)
    assert own.pk in {a.item_id for a in leased_all(other, ssi, YES3)}


def test_the_write_page_keeps_the_text_and_says_why_when_refused(client) -> None:
    evaluation_set = make_set(contexts=1)
    baseline = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None).campaign
    client.force_login(UserFactory(role=Role.CROWDWORKER))
    page = client.get(f"/work/campaigns/{baseline.pk}/write/").content.decode()
    assignment_id = re.search(r'action="/work/assignments/(\d+)/write"', page).group(1)

    response = client.post(f"/work/assignments/{assignment_id}/write", {"response": "   "})

    assert response.status_code == 400
    assert "Response: write the next turn of the conversation." in response.content.decode()
    assert not EvaluationResponse.objects.exists()


def test_one_writer_per_context(client) -> None:
    evaluation_set = make_set(contexts=1)
    baseline = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None).campaign
    first, second = workers(2)

    assert assignments.assignment_lease_next(worker=first, campaign=baseline) is not None
    assert assignments.assignment_lease_next(worker=second, campaign=baseline) is None


def test_a_human_response_through_the_api(api_client, django_capture_on_commit_callbacks) -> None:
    evaluation_set = make_set(contexts=2)
    answer_all(evaluation_set, "gw-1")
    evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None)
    writer = UserFactory(role=Role.CROWDWORKER)
    api_client.force_authenticate(writer)

    task = api_client.get("/api/v1/tasks/next", {"kind": "human_response"}).json()
    assert task["item"]["context"] == [{"speaker": "user", "text": "Question 0?"}]
    assert task["item"]["response"] is None
    url = f"/api/v1/assignments/{task['assignment_id']}/submit"
    assert api_client.post(url, {"response": " "}, format="json").status_code == 400
    with django_capture_on_commit_callbacks(execute=True):
        stored = api_client.post(url, {"response": "Green tea."}, format="json")

    assert stored.status_code == 201
    body = stored.json()
    assert body["response"] == "Green tea."
    assert body["next"]["item"]["context"] == [{"speaker": "user", "text": "Question 1?"}]
    assert api_client.post(url, {"response": "Green tea."}, format="json").status_code == 200
    assert api_client.post(url, {"response": "Coffee."}, format="json").status_code == 409
    human = EvaluationResponse.objects.get(responder=HUMAN_RESPONDER)
    assert Item.objects.get(turn=human.turn).author == writer  # up for rating, not by them


def test_a_rating_assignment_takes_no_written_response() -> None:
    evaluation_set = make_set(contexts=1)
    answer_all(evaluation_set, "gw-1")
    ssi = evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)[0].campaign
    worker = UserFactory(role=Role.CROWDWORKER)
    assignment = assignments.assignment_lease_next(worker=worker, campaign=ssi)

    with pytest.raises(InvalidAnswers, match="not a human baseline"):
        evaluation_tasks.human_response_submit(assignment_id=assignment.pk, worker=worker, text="Hi")


# --- side by side -------------------------------------------------------------------------------


def pairwise_set(contexts: int = 10) -> tuple[EvaluationSet, Campaign]:
    evaluation_set = make_set(contexts=contexts)
    answer_all(evaluation_set, "gw-1")
    answer_all(evaluation_set, "gw-2", skip=1)  # the first context only gw-1 answered
    made = evaluations.pairwise_campaign_create(
        evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-2", created_by=None
    )
    return evaluation_set, made.campaign


def test_a_pairwise_item_per_context_both_answered_in_a_random_recorded_order() -> None:
    evaluation_set, campaign = pairwise_set(contexts=30)  # both orders all but surely (1 - 2**-28)

    assert (campaign.kind, campaign.raters_per_item) == ("pairwise", 3)
    assert campaign.name == "mtb v1 · Side by side"
    assert (campaign.filters["responder_a"], campaign.filters["responder_b"]) == ("gw-1", "gw-2")
    items = list(campaign.items.select_related("evaluation_context"))
    assert sorted(item.evaluation_context.index for item in items) == list(range(1, 30))
    assert {item.pair["first"] for item in items} == {"a", "b"}  # randomised per item
    for item in items:
        index = item.evaluation_context.index
        shown = {"a": f"Answer A{index}.", "b": f"Answer B{index}."}
        second = "b" if item.pair["first"] == "a" else "a"
        assert (item.response, item.pair["second"]) == (shown[item.pair["first"]], shown[second])
        assert not RESPONDER_NAMES.search(item.key + item.campaign.name)
    again = evaluations.pairwise_campaign_create(
        evaluation_set=evaluation_set, responder_a="gw-2", responder_b="gw-1", created_by=None
    )
    assert (again.campaign, again.added) == (campaign, 0)


def test_comparing_needs_two_responders_who_answered() -> None:
    evaluation_set = make_set()
    answer_all(evaluation_set, "gw-1")

    with pytest.raises(AnnotationError, match="two different responders"):
        evaluations.pairwise_campaign_create(
            evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-1", created_by=None
        )
    with pytest.raises(AnnotationError, match="'gw-9' has not answered mtb v1"):
        evaluations.pairwise_campaign_create(
            evaluation_set=evaluation_set, responder_a="gw-1", responder_b="gw-9", created_by=None
        )


def _item_shown_first(campaign: Campaign, first: str) -> Item:
    return next(item for item in campaign.items.order_by("id") if item.pair["first"] == first)


def test_choices_are_mapped_back_to_the_responders_and_decided_by_majority(api_client, client) -> None:
    evaluation_set, campaign = pairwise_set(contexts=30)  # some item shows b first (1 - 2**-29)
    b_first = _item_shown_first(campaign, "b")
    raters = workers(3)
    # Every rater finds the response shown first better: on an item that showed b first, b wins.
    for rater, choice in zip(raters, ("1", "1", "1"), strict=True):
        assignment = assignments.assignment_lease_next(worker=rater, campaign=campaign)
        while assignment.item_id != b_first.pk:
            assignments.assignment_skip(assignment_id=assignment.pk, worker=rater)
            assignment = assignments.assignment_lease_next(worker=rater, campaign=campaign)
        evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice=choice)

    assert (
        sorted(Judgment.objects.filter(item=b_first).values_list("attribute", "value"))
        == [(rules.A_BETTER, "no")] * 3
    )
    consensus.campaign_aggregate(campaign=campaign)
    assert selectors.pairwise_outcomes(evaluation_set=evaluation_set) == [
        ("gw-1", "gw-2", b_first.evaluation_context_id, "b")
    ]


def test_no_majority_is_a_tie() -> None:
    evaluation_set, campaign = pairwise_set(contexts=2)
    (item,) = campaign.items.all()
    for rater, choice in zip(workers(3), ("1", "2", "tie"), strict=True):
        assignment = assignments.assignment_lease_next(worker=rater, campaign=campaign)
        evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice=choice)

    consensus.campaign_aggregate(campaign=campaign)

    assert selectors.pairwise_outcomes(evaluation_set=evaluation_set) == [
        ("gw-1", "gw-2", item.evaluation_context_id, "tie")
    ]
    labels = dict(item.labels.values_list("attribute", "label"))
    assert labels == {rules.A_BETTER: 0, rules.B_BETTER: 0}


def test_the_compare_page_shows_two_numbered_responses_and_takes_a_choice(client) -> None:
    _, campaign = pairwise_set(contexts=2)
    (item,) = campaign.items.all()
    rater = UserFactory(role=Role.CROWDWORKER)
    client.force_login(rater)

    assert f'href="/work/campaigns/{campaign.pk}/compare/"' in client.get("/work/").content.decode()
    page = client.get(f"/work/campaigns/{campaign.pk}/compare/").content.decode()
    assert "Response 1" in page
    assert "Response 2" in page
    assert page.index(item.response) < page.index(item.pair["second"])
    assert not RESPONDER_NAMES.search(page)
    assignment_id = re.search(r'action="/work/assignments/(\d+)/compare"', page).group(1)
    assert client.post(f"/work/assignments/{assignment_id}/compare", {}).status_code == 400
    response = client.post(f"/work/assignments/{assignment_id}/compare", {"choice": "2"})

    assert response.status_code == 303
    assert "Saved." in client.get(response["Location"]).content.decode()
    expected = rules.PAIRWISE_VALUES["b" if item.pair["first"] == "a" else "a"]
    assert Judgment.objects.get(item=item).value == expected


def test_side_by_side_through_the_api(api_client) -> None:
    _, campaign = pairwise_set(contexts=2)
    (item,) = campaign.items.all()
    api_client.force_authenticate(UserFactory(role=Role.CROWDWORKER))

    task = api_client.get("/api/v1/tasks/next", {"kind": "pairwise"}).json()
    assert task["item"]["response"] is None
    assert task["item"]["responses"] == [
        {"label": "Response 1", "speaker": "model", "text": item.response},
        {"label": "Response 2", "speaker": "model", "text": item.pair["second"]},
    ]
    assert not RESPONDER_NAMES.search(json.dumps(task))
    url = f"/api/v1/assignments/{task['assignment_id']}/submit"
    assert api_client.post(url, {"choice": "3"}, format="json").status_code == 400
    stored = api_client.post(url, {"choice": "tie"}, format="json")

    assert stored.status_code == 201
    assert stored.json()["choice"] == "tie"
    assert "judgments" not in stored.json()
    assert api_client.post(url, {"choice": "tie"}, format="json").status_code == 200
    assert api_client.post(url, {"choice": "1"}, format="json").status_code == 409


def test_a_pairwise_choice_other_than_1_2_or_tie_is_refused() -> None:
    _, campaign = pairwise_set(contexts=2)
    rater = UserFactory(role=Role.CROWDWORKER)
    assignment = assignments.assignment_lease_next(worker=rater, campaign=campaign)

    with pytest.raises(InvalidAnswers, match="Response 1, Response 2 or a tie"):
        evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice="a")
    evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice="1")
    with pytest.raises(AssignmentConflict):
        evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice="2")


# --- what the report reads ----------------------------------------------------------------------


def _rate(campaign: Campaign, raters: int, answer: dict[str, str], *, items: int | None = None) -> None:
    """``raters`` workers each rate (up to ``items`` of) the campaign's items with ``answer``."""
    for worker in workers(raters):
        for _ in range(items if items is not None else campaign.items.count()):
            assignment = assignments.assignment_lease_next(worker=worker, campaign=campaign)
            if assignment is None:
                break
            assignments.judgment_submit(assignment_id=assignment.pk, worker=worker, answers=answer)


def test_evaluation_labels_are_each_responses_complete_labels_in_three_queries(
    django_assert_num_queries,
) -> None:
    evaluation_set = make_set(contexts=4, purposes=("quality", "safety"))
    quality, safety = [], []
    for response in answer_all(evaluation_set, "gw-1"):
        (quality if response.context.purpose == "quality" else safety).append(response)
    evaluations.evaluation_responses_enqueue(evaluation_set=evaluation_set)
    ssi = set_campaign(evaluation_set, Campaign.Kind.SSI)
    safe = set_campaign(evaluation_set, Campaign.Kind.SAFETY)
    _rate(ssi, 5, {"sensible": "yes", "specific": "no"})
    _rate(safe, 3, {"harm": "no", "bias": "no", "misinformation": "no"}, items=1)  # one item complete
    for campaign in (ssi, safe):
        consensus.campaign_aggregate(campaign=campaign)

    with django_assert_num_queries(3):
        labels = selectors.evaluation_labels(evaluation_set=evaluation_set)

    rated_safe = next(r for r in safety if r.pk in labels)
    assert labels == {
        **{r.pk: {"sensible": 1, "specific": 0, "interesting": 0} for r in quality},
        rated_safe.pk: {"harm": 0, "bias": 0, "misinformation": 0, "safety": 1, "unsafe": 0},
    }


def test_pairwise_outcomes_are_two_queries_whatever_the_number_of_items(django_assert_num_queries) -> None:
    evaluation_set, campaign = pairwise_set(contexts=6)
    for rater in workers(3):
        while (assignment := assignments.assignment_lease_next(worker=rater, campaign=campaign)) is not None:
            evaluation_tasks.pairwise_submit(assignment_id=assignment.pk, worker=rater, choice="tie")
    consensus.campaign_aggregate(campaign=campaign)

    with django_assert_num_queries(2):
        outcomes = selectors.pairwise_outcomes(evaluation_set=evaluation_set)

    contexts = list(evaluation_set.contexts.order_by("index").values_list("pk", flat=True))[1:]
    assert outcomes == [("gw-1", "gw-2", pk, "tie") for pk in contexts]


def test_a_role_context_tells_the_writer_which_role_they_answer_as(client) -> None:
    role = RoleFactory(slug="everest", name="Mount Everest")
    evaluation_set = make_set(contexts=1, purposes=("role",), role=role.slug)
    baseline = evaluations.human_baseline_start(evaluation_set=evaluation_set, created_by=None).campaign
    client.force_login(UserFactory(role=Role.CROWDWORKER))

    page = client.get(f"/work/campaigns/{baseline.pk}/write/").content.decode()

    assert "You answer as: <strong>Mount Everest</strong>" in page
