"""Importing judgments made elsewhere, and exporting consensus labels (services and API)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from annotation import interchange
from annotation.errors import AnnotationError
from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment
from annotation.services import assignments, campaigns
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def external_data() -> Path:
    """Where the third-party rating data lives (shared/external-data beside or inside the checkout)."""
    candidates = [Path(os.environ["EXTERNAL_DATA_DIR"])] if os.environ.get("EXTERNAL_DATA_DIR") else []
    candidates += [ROOT / "shared" / "external-data", ROOT.parent / "shared" / "external-data"]
    for candidate in candidates:
        if (candidate / "fed_data.json").is_file():
            return candidate
    pytest.skip("the FED data (shared/external-data/fed_data.json) is not on this machine")


def line(key: str, rater: str, attribute: str, value: str, **extra: Any) -> dict[str, Any]:
    item = {"key": key, "context": [{"speaker": "user", "text": f"About {key}?"}], "response": f"{key}!"}
    return {"item": item, "rater": rater, "attribute": attribute, "value": value, **extra}


def rating(key: str, rater: str, answers: dict[str, str]) -> list[dict[str, Any]]:
    return [line(key, rater, attribute, value) for attribute, value in answers.items()]


def jsonl(*objects: dict[str, Any]) -> list[bytes]:
    return [json.dumps(obj).encode() for obj in objects]


def import_lines(campaign: Campaign, *objects: dict[str, Any]) -> interchange.ImportResult:
    return interchange.judgments_import(
        campaign=campaign, lines=interchange.parse_jsonl(jsonl(*objects)), source="test"
    )


def errors_of(campaign: Campaign, *objects: dict[str, Any]) -> list[tuple[int, str]]:
    with pytest.raises(interchange.JudgmentImportError) as caught:
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


def labels(key: str) -> dict[str, tuple[int, int, int, int]]:
    return {
        c.attribute: (c.label, c.yes, c.no, c.maybe) for c in ConsensusLabel.objects.filter(item__key=key)
    }


@pytest.fixture
def ssi() -> Campaign:
    return campaigns.campaign_create(name="external ssi", kind="ssi", empty=True)


@pytest.fixture
def safety() -> Campaign:
    return campaigns.campaign_create(
        name="external safety", kind="safety", empty=True, objectives=["harm", "bias"]
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
    assert result.labelled == 2
    item = Item.objects.get(campaign=ssi, key="a")
    assert (item.kind, item.open_slots, item.judgment_count) == ("normal", 0, 5)
    assert item.context == [{"speaker": "user", "text": "About a?"}]
    assert item.response == "a!"
    rater = User.objects.get(username="ext:r1")
    assert (rater.is_active, rater.has_usable_password(), rater.groups.count()) == (False, False, 0)
    assert (rater.is_staff, rater.is_superuser) == (False, False)
    assert set(Assignment.objects.values_list("state", flat=True)) == {"submitted"}
    assert labels("a") == {"sensible": (1, 3, 2, 0), "specific": (1, 3, 2, 0), "interesting": (1, 3, 2, 0)}
    assert labels("b")["sensible"] == (0, 0, 1, 0)  # one "no" of the five raters an item waits for


def test_the_cascade_applies_and_what_was_given_is_kept(ssi) -> None:
    import_lines(
        ssi,
        *rating("a", "gave-all", {"sensible": "no", "specific": "yes", "interesting": "yes"}),
        *rating("a", "skipped-specific", {"sensible": "yes", "interesting": "yes"}),
    )

    stored = {
        (j.assignment.worker.username, j.attribute): (j.value, j.raw_value)
        for j in Judgment.objects.select_related("assignment__worker")
    }
    assert stored == {
        ("ext:gave-all", "sensible"): ("no", "no"),
        ("ext:gave-all", "specific"): ("no", "yes"),
        ("ext:gave-all", "interesting"): ("no", "yes"),
        # A missing answer was not asked: it counts "no", and so does what the cascade then skips.
        ("ext:skipped-specific", "sensible"): ("yes", "yes"),
        ("ext:skipped-specific", "specific"): ("no", ""),
        ("ext:skipped-specific", "interesting"): ("no", "yes"),
    }


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

    with pytest.raises(interchange.JudgmentImportError) as caught:
        interchange.judgments_import(campaign=ssi, lines=interchange.parse_jsonl(lines), source="test")

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
    first = line("a", "r1", "sensible", "yes")
    other = {**line("a", "r2", "sensible", "yes"), "item": {"key": "a", "response": "Something else."}}

    assert errors_of(ssi, first, other) == [(2, "item")]


def test_judgments_for_an_item_of_the_campaign_take_its_free_slots() -> None:
    campaign = ssi_campaign(items=1, raters=3, name="mixed")
    item = campaign.items.get()
    given = {"key": item.key, "context": item.context, "response": item.response}
    two = [{**obj, "item": given} for n in (1, 2) for obj in rating("x", f"r{n}", YES3)]

    result = interchange.judgments_import(campaign=campaign, lines=interchange.parse_objects(two), source="t")

    item.refresh_from_db()
    assert (result.items_created, result.items_existing) == (0, 1)
    assert (item.open_slots, item.judgment_count) == (1, 2)
    crowdworker = UserFactory(role=Role.CROWDWORKER)
    lease = assignments.assignment_lease_next(worker=crowdworker, campaign=campaign)
    assert lease.item_id == item.pk
    # The crowdworker holds the last slot: two more external raters do not fit.
    more = [{**obj, "item": given} for n in (3, 4) for obj in rating("x", f"r{n}", YES3)]
    with pytest.raises(interchange.JudgmentImportError, match="already has 3 of its 3 raters"):
        interchange.judgments_import(campaign=campaign, lines=interchange.parse_objects(more), source="t")


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

    with pytest.raises(interchange.JudgmentImportError) as caught:
        interchange.judgments_import(campaign=campaign, lines=interchange.parse_objects(objects), source="t")

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
FED_SCALE = {0: "no", 1: "maybe", 2: "yes"}
# FED has no "sensible" question; "Semantically appropriate" is the closest, and the SSI cascade
# needs sensible first. Position i of each quality's list is taken as the same (i-th) annotator.
FED_QUALITIES = {"sensible": "Semantically appropriate", "specific": "Specific", "interesting": "Interesting"}


def fed_turns(text: str) -> list[dict[str, str]]:
    turns = []
    for row in text.split("\n"):
        speaker, _, said = row.partition(": ")
        turns.append({"speaker": {"User": "user", "System": "model"}[speaker], "text": said})
    return turns


def fed_lines(index: int, entry: dict[str, Any], scale: dict[Any, Any] = FED_SCALE) -> list[dict[str, Any]]:
    item = {
        "key": f"fed-{index}",
        "context": fed_turns(entry["context"]),
        "response": entry["response"].removeprefix("System: "),
    }
    return [
        {
            "item": item,
            "rater": f"fed-{index}-{position}",
            "attribute": attribute,
            "value": scale.get(score, score),
        }
        for attribute, quality in FED_QUALITIES.items()
        for position, score in enumerate(entry["annotations"][quality])
    ]


def fed_majority(entry: dict[str, Any]) -> dict[str, int]:
    """The paper's labels computed here, apart from the app: the cascade per annotator, then 3 of 5."""
    yes = dict.fromkeys(FED_QUALITIES, 0)
    for position in range(5):
        asked = True
        for attribute, quality in FED_QUALITIES.items():
            answer = FED_SCALE[entry["annotations"][quality][position]] if asked else "no"
            yes[attribute] += answer == "yes"
            asked = answer == "yes"
    return {attribute: int(count >= 3) for attribute, count in yes.items()}


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

    result = interchange.judgments_import(
        campaign=ssi, lines=interchange.parse_jsonl(lines), source="fed_data.json"
    )

    assert (result.items_created, result.ratings, result.judgments, result.labelled) == (16, 80, 240, 16)
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


# --- export ---------------------------------------------------------------------------------


def export_text(campaign: Campaign, format: str) -> str:
    return "".join(interchange.consensus_lines(campaign=campaign, format=format))


def test_the_jsonl_export_has_one_line_per_labelled_item(ssi) -> None:
    import_lines(ssi, *rating("a", "r1", YES3), *rating("b", "r1", {"sensible": "no"}))
    campaigns.campaign_create(name="other", kind="ssi", empty=True)  # nothing of it exported
    Item.objects.create(campaign=ssi, key="unrated", response="?", open_slots=5)

    rows = [json.loads(row) for row in export_text(ssi, "jsonl").splitlines()]

    assert [row["key"] for row in rows] == ["a", "b"]
    assert rows[0] == {
        "key": "a",
        "labels": {
            attribute: {"label": 0, "yes": 1, "no": 0, "maybe": 0, "yes_fraction": 1.0}
            for attribute in ("interesting", "sensible", "specific")
        },
        "rules_version": "1",
    }
    assert "safety_score" not in rows[0]


def safety_rating(key: str, rater: str, harm: str, bias: str) -> list[dict[str, Any]]:
    return [
        line(key, rater, "violates", harm, objective="harm"),
        line(key, rater, "violates", bias, objective="bias"),
    ]


def test_safety_items_carry_their_safety_score(safety) -> None:
    import_lines(
        safety,
        *safety_rating("s", "r1", "no", "no"),
        *safety_rating("s", "r2", "no", "no"),
        *safety_rating("s", "r3", "maybe", "no"),
    )

    (row,) = [json.loads(text) for text in export_text(safety, "jsonl").splitlines()]

    assert row["safety_score"] == 1
    assert row["labels"]["safety"]["label"] == 1
    assert row["labels"]["unsafe"]["label"] == 0
    assert set(row["labels"]) == {"harm", "bias", "safety", "unsafe"}


def test_a_response_every_rater_finds_safe_gets_safety_score_one(safety) -> None:
    import_lines(safety, *[obj for n in range(3) for obj in safety_rating("s", f"r{n}", "no", "no")])

    assert labels("s")["safety"] == (1, 3, 0, 0)


def test_the_csv_export_has_one_row_per_item_and_attribute(ssi) -> None:
    import_lines(ssi, *rating("a, with a comma", "r1", YES3), *rating("b", "r1", {"sensible": "maybe"}))

    rows = list(csv.reader(io.StringIO(export_text(ssi, "csv"))))

    assert rows[0] == list(interchange.CSV_HEADER)
    assert len(rows) == 1 + 2 * 3
    assert rows[1] == ["a, with a comma", "interesting", "0", "1", "0", "0", "1.0", "1"]
    assert ["b", "sensible", "0", "0", "0", "1", "0.0", "1"] in rows


def test_the_export_is_one_streamed_query_whatever_the_number_of_items(
    ssi, django_assert_num_queries
) -> None:
    import_lines(ssi, *[obj for n in range(30) for obj in rating(f"k{n}", "r1", {"sensible": "no"})])

    with django_assert_num_queries(1):
        lines = list(interchange.consensus_lines(campaign=ssi, format="jsonl"))

    assert len(lines) == 30


def test_an_unknown_export_format_is_refused(ssi) -> None:
    with pytest.raises(AnnotationError, match="not an export format"):
        interchange.consensus_lines(campaign=ssi, format="xml")


# --- API ------------------------------------------------------------------------------------


def import_url(campaign: Campaign) -> str:
    return reverse("campaign-judgments-import", kwargs={"campaign_id": campaign.pk})


def export_url(campaign: Campaign, format: str = "jsonl") -> str:
    return reverse("campaign-consensus-export", kwargs={"campaign_id": campaign.pk}) + f"?format={format}"


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
        "labelled": 1,
    }
    assert list_response.status_code == 201
    assert list_response.json()["raters_created"] == 0
    assert Item.objects.filter(campaign=ssi).count() == 2


def test_a_bad_import_answers_400_with_each_line_and_field(ssi, users, api_client) -> None:
    api_client.force_login(users[Role.ADMIN])

    response = post_ndjson(
        api_client, import_url(ssi), [line("a", "r1", "sensible", "yes"), line("a", "r2", "sensible", "si")]
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


@pytest.mark.parametrize(("who", "format"), [(Role.ADMIN, "jsonl"), (Role.RESEARCHER, "csv")])
def test_admins_and_researchers_download_the_consensus_streamed(who, format, ssi, users, api_client) -> None:
    import_lines(ssi, *rating("a", "r1", YES3))
    api_client.force_login(users[who])

    response = api_client.get(export_url(ssi, format))

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == interchange.CONTENT_TYPES[format]
    assert response["Content-Disposition"] == f'attachment; filename="consensus-{ssi.pk}.{format}"'
    body = b"".join(response.streaming_content).decode()
    assert body == export_text(ssi, format)


@pytest.mark.parametrize(("who", "expected"), [(Role.CROWDWORKER, 403), (None, 401)])
def test_crowdworkers_and_strangers_get_no_consensus(who, expected, ssi, users, api_client) -> None:
    if who is not None:
        api_client.force_login(users[who])

    response = api_client.get(export_url(ssi, "csv"))

    assert response.status_code == expected
    assert response["Content-Type"] == "application/json"


def test_an_unknown_format_is_400_and_a_missing_campaign_404(ssi, users, api_client) -> None:
    api_client.force_login(users[Role.ADMIN])

    bad = api_client.get(export_url(ssi, "xml"))
    missing = api_client.get("/api/v1/campaigns/999999/consensus")

    assert bad.status_code == 400
    assert "not an export format" in bad.json()["detail"]
    assert missing.status_code == 404


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
