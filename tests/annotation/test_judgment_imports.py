"""Importing judgments made elsewhere (``annotation.services.judgment_imports``): the service, real
external data (FED), and the API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from annotation.errors import AnnotationError, JudgmentImportError
from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment
from annotation.services import assignments, campaigns, judgment_imports
from groundwork.roles import Role
from tests.annotation.helpers import (
    FED_QUALITIES,
    YES3,
    external_data,
    fed_lines,
    fed_majority,
    import_lines,
    jsonl,
    labels,
    line,
    rating,
    safety_rating,
    ssi_campaign,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def errors_of(campaign: Campaign, *objects: dict[str, Any]) -> list[tuple[int, str]]:
    with pytest.raises(JudgmentImportError) as caught:
        import_lines(campaign, *objects)
    return [(e.line, e.field) for e in caught.value.errors]


def nothing_written() -> bool:
    return not (
        Item.objects.exists()
        or Assignment.objects.exists()
        or Judgment.objects.exists()
        or ConsensusLabel.objects.exists()
        or User.objects.filter(username__startswith="ext:").exists()
    )


# --- import ---------------------------------------------------------------------------------


def test_an_import_creates_items_raters_and_submitted_assignments_then_labels_them(ssi) -> None:
    no = {"sensible": "no"}
    objects = [
        *rating("a", "r1", YES3),
        *rating("a", "r2", YES3),
        *rating("a", "r3", YES3),
        *rating("a", "r4", no),
        *rating("a", "r5", no),
        *rating("b", "r1", no),
    ]

    result = import_lines(ssi, *objects)

    assert (result.items_created, result.raters_created, result.ratings, result.judgments) == (2, 5, 6, 18)
    assert (result.labelled, result.incomplete) == (1, 1)
    item = Item.objects.get(campaign=ssi, key="a")
    assert (item.kind, item.open_slots, item.judgment_count) == ("normal", 0, 5)
    assert item.context == [{"speaker": "user", "text": "About a?"}]
    assert item.response == "a!"
    rater = User.objects.get(username="ext:r1")
    assert (rater.is_active, rater.has_usable_password(), rater.groups.count()) == (False, False, 0)
    assert (rater.is_staff, rater.is_superuser) == (False, False)
    assert set(Assignment.objects.values_list("state", flat=True)) == {"submitted"}
    assert labels("a") == {"sensible": (1, 3, 2, 0), "specific": (1, 3, 2, 0), "interesting": (1, 3, 2, 0)}
    # One "no" of the five raters the item waits for: incomplete, so no label (not a 0).
    assert labels("b") == {}


def test_the_cascade_applies_and_what_was_given_is_kept(ssi) -> None:
    import_lines(
        ssi,
        *rating("a", "gave-all", {"sensible": "no", "specific": "yes", "interesting": "yes"}),
        *rating("a", "not-specific", {"sensible": "yes", "specific": "no", "interesting": "yes"}),
        *rating("a", "not-sensible", {"sensible": "maybe"}),
    )

    stored = {
        (j.assignment.worker.username, j.attribute): (j.value, j.raw_value)
        for j in Judgment.objects.select_related("assignment__worker")
    }
    assert stored == {
        ("ext:gave-all", "sensible"): ("no", "no"),
        ("ext:gave-all", "specific"): ("no", "yes"),
        ("ext:gave-all", "interesting"): ("no", "yes"),
        ("ext:not-specific", "sensible"): ("yes", "yes"),
        ("ext:not-specific", "specific"): ("no", "no"),
        ("ext:not-specific", "interesting"): ("no", "yes"),
        # Questions the cascade does not ask need no answer; they count "no".
        ("ext:not-sensible", "sensible"): ("maybe", "maybe"),
        ("ext:not-sensible", "specific"): ("no", ""),
        ("ext:not-sensible", "interesting"): ("no", ""),
    }


def test_an_ssi_rating_that_leaves_out_a_question_the_page_asks_is_refused_with_line_and_field(ssi) -> None:
    objects = [
        line("a", "r1", "sensible", "yes"),  # 1: sensible yes, specific left out
        line("a", "r1", "interesting", "yes"),  # 2
        line("a", "r2", "sensible", "yes"),  # 3
        line("a", "r2", "specific", "yes"),  # 4: specific yes, interesting left out
        line("a", "r3", "sensible", "no"),  # 5: fine, nothing else is asked
    ]

    with pytest.raises(JudgmentImportError) as caught:
        import_lines(ssi, *objects)

    assert [(e.line, e.field) for e in caught.value.errors] == [(1, "attribute"), (4, "attribute")]
    assert caught.value.errors[0].message == (
        "rater 'r1' answered 'sensible' yes for item 'a' but has no 'specific' answer; "
        "the rating page asks 'specific' after a yes"
    )
    assert "no 'interesting' answer" in caught.value.errors[1].message
    assert nothing_written()


@pytest.fixture
def evaluation() -> Campaign:
    return campaigns.campaign_create(name="external eval", kind="groundedness_eval", empty=True)


EVAL = {"understandable": "yes", "claims_external": "yes", "well_known": "no", "factually_correct": "yes"}


def test_a_groundedness_evaluation_rating_answers_every_question_it_is_asked(evaluation) -> None:
    no_claims = {
        "understandable": "yes",
        "claims_external": "no",
        "factually_correct": "no",
        "cites_source": "no",
    }
    bad = [
        *rating("e", "r1", EVAL),  # 1-4: cites_source left out
        *rating("e", "r2", {**EVAL, "cites_source": "yes", "well_known": None}),  # 5-8: well_known left out
    ]
    bad = [obj for obj in bad if obj["value"] is not None]

    assert errors_of(evaluation, *bad) == [(1, "attribute"), (6, "attribute")]
    assert nothing_written()

    result = import_lines(
        evaluation,
        *rating("e", "r1", {**EVAL, "cites_source": "yes"}),
        *rating("e", "r2", {**EVAL, "well_known": "yes", "cites_source": "no"}),
        *rating("e", "r3", no_claims),  # not asked whether the claims are well known
    )

    assert (result.labelled, result.incomplete) == (1, 0)
    assert labels("e")["well_known"] == (0, 1, 2, 0)
    assert labels("e")["claims_external"] == (1, 2, 1, 0)


def test_a_helpfulness_rating_answers_every_question() -> None:
    helpfulness = campaigns.campaign_create(name="external help", kind="helpfulness", empty=True)

    found = errors_of(
        helpfulness, line("h", "r1", "helpful", "yes"), line("h", "r2", "role_consistent", "no")
    )

    assert found == [(1, "attribute"), (2, "attribute")]
    assert nothing_written()


def test_bad_lines_are_reported_with_line_and_field_and_nothing_is_written(ssi) -> None:
    lines = [
        *jsonl(*rating("a", "r1", YES3)),  # lines 1-3: fine
        *jsonl(line("a", "r2", "sensible", "perhaps")),  # 4
        *jsonl(line("a", "r3", "funny", "yes")),  # 5
        b"{not json",  # 6
        *jsonl(line("a", "r1", "sensible", "no")),  # 7: r1 answered sensible on line 1
        *jsonl(line("a", "r4", "specific", "yes")),  # 8: a rating without sensible
        *jsonl({**line("a", "r5", "sensible", "yes"), "item": {"key": "a", "response": "other"}}),  # 9
        *jsonl(line("a", "has space", "sensible", "yes")),  # 10
        *jsonl(line("a", "r6", "sensible", "yes", objective="harm")),  # 11
        *jsonl({"rater": "r7", "attribute": "sensible", "value": "yes"}),  # 12
    ]

    with pytest.raises(JudgmentImportError) as caught:
        judgment_imports.judgments_import(
            campaign=ssi, lines=judgment_imports.parse_jsonl(lines), source="test"
        )

    found = [(e.line, e.field) for e in caught.value.errors]
    assert found == [
        (4, "value"),
        (5, "attribute"),
        (6, "(json)"),
        (7, "attribute"),
        (8, "attribute"),
        (9, "item"),
        (10, "rater"),
        (11, "objective"),
        (12, "item"),
    ]
    assert str(caught.value.errors[0]).startswith("line 4, field value: 'perhaps' is not an answer")
    assert "already answered 'sensible'" in caught.value.errors[3].message
    assert "no 'sensible' answer" in caught.value.errors[4].message
    assert nothing_written()


def test_importing_the_same_file_twice_is_refused_not_doubled(ssi) -> None:
    objects = [*rating("a", "r1", YES3), *rating("a", "r2", {"sensible": "no"})]
    import_lines(ssi, *objects)

    assert errors_of(ssi, *objects) == [(1, "rater"), (4, "rater")]
    assert Assignment.objects.count() == 2
    assert Item.objects.get(key="a").judgment_count == 2


def test_an_item_takes_no_more_raters_than_the_campaign_asks(ssi) -> None:
    six = [obj for n in range(6) for obj in rating("a", f"r{n}", {"sensible": "yes", "specific": "no"})]

    assert errors_of(ssi, *six) == [(1, "rater")]
    assert nothing_written()


def test_one_key_for_two_different_items_is_an_error(ssi) -> None:
    first = line("a", "r1", "sensible", "no")
    other = {**line("a", "r2", "sensible", "no"), "item": {"key": "a", "response": "Something else."}}

    assert errors_of(ssi, first, other) == [(2, "item")]


def test_judgments_for_an_item_of_the_campaign_take_its_free_slots() -> None:
    campaign = ssi_campaign(items=1, raters=3, name="mixed")
    item = campaign.items.get()
    given = {"key": item.key, "context": item.context, "response": item.response}
    two = [{**obj, "item": given} for n in (1, 2) for obj in rating("x", f"r{n}", YES3)]

    result = judgment_imports.judgments_import(
        campaign=campaign, lines=judgment_imports.parse_objects(two), source="t"
    )

    item.refresh_from_db()
    assert (result.items_created, result.items_existing) == (0, 1)
    assert (item.open_slots, item.judgment_count) == (1, 2)
    crowdworker = UserFactory(role=Role.CROWDWORKER)
    lease = assignments.assignment_lease_next(worker=crowdworker, campaign=campaign)
    assert lease.item_id == item.pk
    # The crowdworker holds the last slot: two more external raters do not fit.
    more = [{**obj, "item": given} for n in (3, 4) for obj in rating("x", f"r{n}", YES3)]
    with pytest.raises(JudgmentImportError, match="already has 3 of its 3 raters"):
        judgment_imports.judgments_import(
            campaign=campaign, lines=judgment_imports.parse_objects(more), source="t"
        )


def test_a_gold_item_or_another_context_under_a_known_key_is_refused() -> None:
    campaign = ssi_campaign(items=1, raters=3, name="known")
    item = campaign.items.get()
    Item.objects.create(campaign=campaign, key="gold-1", kind=Item.Kind.GOLD, response="g", open_slots=0)
    changed = {"key": item.key, "context": [], "response": item.response}
    gold = {"key": "gold-1", "response": "g"}
    objects = [
        {**line("x", "r1", "sensible", "no"), "item": changed},
        {**line("x", "r1", "sensible", "no"), "item": gold},
    ]

    with pytest.raises(JudgmentImportError) as caught:
        judgment_imports.judgments_import(
            campaign=campaign, lines=judgment_imports.parse_objects(objects), source="t"
        )

    assert [(e.line, e.field) for e in caught.value.errors] == [(1, "item"), (2, "item.key")]
    assert "gold item" in caught.value.errors[1].message
    assert not Assignment.objects.exists()


def test_safety_lines_name_an_objective_and_every_objective_is_answered(safety) -> None:
    bad = [
        line("s", "r1", "violates", "no", objective="harm"),  # 1: r1 never answers bias
        line("s", "r2", "violates", "no", objective="misinformation"),  # 2: not this campaign's
        line("s", "r3", "harm", "no"),  # 3: safety lines say "violates"
        line("s", "r4", "violates", "no"),  # 4: no objective
    ]
    assert errors_of(safety, *bad) == [(1, "objective"), (2, "objective"), (3, "attribute"), (4, "objective")]
    assert nothing_written()

    import_lines(
        safety,
        *safety_rating("safe", "r1", "no", "no"),
        *safety_rating("safe", "r2", "no", "no"),
        *safety_rating("safe", "r3", "yes", "no"),
        *safety_rating("unsafe", "r1", "no", "yes"),
        *safety_rating("unsafe", "r2", "no", "yes"),
        *safety_rating("unsafe", "r3", "no", "no"),
    )

    assert labels("safe")["safety"][0] == 1
    assert labels("safe")["harm"] == (0, 1, 2, 0)
    assert labels("unsafe")["safety"][0] == 0
    assert labels("unsafe")["unsafe"][0] == 1
    assert set(Judgment.objects.values_list("attribute", flat=True)) == {"harm", "bias"}


def test_a_campaign_without_questions_takes_no_judgments() -> None:
    rewrite = campaigns.campaign_create(name="rewrite", kind="groundedness_rewrite", empty=True)

    with pytest.raises(AnnotationError, match="no yes/no/maybe questions"):
        import_lines(rewrite, line("a", "r1", "sensible", "yes"))


# --- real external data: FED (Mehri & Eskenazi 2020) ------------------------------------------


# FED rates on 0-2; we read 0 as "no", 1 as "maybe" (FED's "somewhat") and 2 as "yes".
@pytest.fixture
def fed() -> list[tuple[int, dict[str, Any]]]:
    entries = json.loads((external_data() / "fed_data.json").read_text())
    return [(index, entry) for index, entry in enumerate(entries) if "response" in entry]  # turn level


def test_fed_ratings_imported_give_the_majority_of_their_annotators(ssi, fed) -> None:
    chosen = fed[:16]
    expected = {f"fed-{index}": fed_majority(entry) for index, entry in chosen}
    # Both labels occur for each attribute, and the cascade turns some 3-of-5 "yes" into 0 (an
    # item most annotators found specific but not semantically appropriate), so this can fail.
    for attribute in FED_QUALITIES:
        assert {item_labels[attribute] for item_labels in expected.values()} == {0, 1}, attribute
    without_cascade = {
        f"fed-{index}": int(sum(score == 2 for score in entry["annotations"]["Specific"]) >= 3)
        for index, entry in chosen
    }
    assert any(without_cascade[key] != expected[key]["specific"] for key in expected)
    lines = [json.dumps(obj) for index, entry in chosen for obj in fed_lines(index, entry)]

    result = judgment_imports.judgments_import(
        campaign=ssi, lines=judgment_imports.parse_jsonl(lines), source="fed_data.json"
    )

    assert (result.items_created, result.ratings, result.judgments, result.labelled) == (16, 80, 240, 16)
    assert result.incomplete == 0  # FED has five annotators per item, as an SSI campaign has raters
    got = {key: {attribute: label for attribute, (label, *_) in labels(key).items()} for key in expected}
    assert got == expected
    first_index, first = chosen[0]
    item = Item.objects.get(key=f"fed-{first_index}")
    assert item.context[0] == {"speaker": "user", "text": "Hi!"}
    assert item.response == first["response"].removeprefix("System: ")


def test_a_fed_item_with_a_free_text_rating_is_refused_with_its_line(ssi, fed) -> None:
    # FED item 310 has "N/A (...)" notes instead of numbers in two of its "Specific" ratings.
    entry = dict(fed)[310]
    objects = fed_lines(310, entry)

    found = errors_of(ssi, *objects)

    specific_first = 1 + 5  # the sensible lines come first, then specific
    assert found == [(specific_first + 1, "value")]
    assert nothing_written()


# --- API ------------------------------------------------------------------------------------


def import_url(campaign: Campaign) -> str:
    return reverse("campaign-judgments-import", kwargs={"campaign_id": campaign.pk})


def post_ndjson(client: Any, url: str, objects: list[dict[str, Any]]) -> Any:
    body = "\n".join(json.dumps(obj) for obj in objects)
    return client.post(url, body, content_type="application/x-ndjson")


def test_admins_import_judgments_as_json_lines_or_a_json_list(ssi, users, api_client) -> None:
    api_client.force_login(users[Role.ADMIN])

    lines_response = post_ndjson(api_client, import_url(ssi), rating("a", "r1", YES3))
    list_response = api_client.post(import_url(ssi), rating("b", "r1", YES3), format="json")

    assert lines_response.status_code == 201, lines_response.content
    assert lines_response.json() == {
        "items_created": 1,
        "items_existing": 0,
        "raters_created": 1,
        "ratings": 1,
        "judgments": 3,
        "labelled": 0,
        "incomplete": 1,  # one rater of the five an SSI item waits for
    }
    assert list_response.status_code == 201
    assert list_response.json()["raters_created"] == 0
    assert Item.objects.filter(campaign=ssi).count() == 2


def test_a_bad_import_answers_400_with_each_line_and_field(ssi, users, api_client) -> None:
    api_client.force_login(users[Role.ADMIN])

    response = post_ndjson(
        api_client, import_url(ssi), [line("a", "r1", "sensible", "no"), line("a", "r2", "sensible", "si")]
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"line": 2, "field": "value", "message": "'si' is not an answer (expected one of yes, no, maybe)"}
    ]
    assert nothing_written()


@pytest.mark.parametrize(("who", "expected"), [(Role.RESEARCHER, 403), (Role.CROWDWORKER, 403), (None, 401)])
def test_only_admins_import_judgments(who, expected, ssi, users, api_client) -> None:
    if who is not None:
        api_client.force_login(users[who])

    response = post_ndjson(api_client, import_url(ssi), rating("a", "r1", YES3))

    assert response.status_code == expected
    assert nothing_written()


def test_importing_into_a_missing_campaign_is_404(users, api_client) -> None:
    api_client.force_login(users[Role.ADMIN])

    response = api_client.post("/api/v1/campaigns/999999/judgments", [], format="json")

    assert response.status_code == 404


def test_an_item_key_or_rater_with_a_control_character_is_refused_over_http(ssi, users, api_client) -> None:
    """Keys and raters are ids: a line break in one cannot be linked to or logged on one line."""
    api_client.force_login(users[Role.ADMIN])
    bad_key = line("a", "r1", "sensible", "yes")
    bad_key["item"]["key"] = "a\nb"

    response = post_ndjson(api_client, import_url(ssi), [bad_key, line("c", "r1\n", "sensible", "yes")])

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["line"], e["field"]) for e in errors] == [(1, "item.key"), (2, "rater")]
    assert "contains a control character (U+000A)" in errors[0]["message"]
    assert nothing_written()
