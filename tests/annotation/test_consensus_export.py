"""Exporting consensus labels (``annotation.consensus_export``): the formats and the API's download.
Only complete items are exported; the incomplete ones are counted."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.urls import reverse

from annotation import consensus_export
from annotation.errors import AnnotationError
from annotation.models import Campaign, Item
from annotation.services import campaigns
from groundwork.roles import Role
from tests.annotation.helpers import YES3, import_lines, labels, rating, safety_rating

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_rater() -> Campaign:
    """An SSI campaign whose items need one rater: one rating makes an item complete."""
    return campaigns.campaign_create(name="one rater", kind="ssi", raters_per_item=1, empty=True)


# --- export ---------------------------------------------------------------------------------


def export_text(campaign: Campaign, format: str) -> str:
    return "".join(consensus_export.consensus_lines(campaign=campaign, format=format))


def test_the_jsonl_export_has_one_line_per_labelled_item(one_rater) -> None:
    import_lines(one_rater, *rating("a", "r1", YES3), *rating("b", "r1", {"sensible": "no"}))
    campaigns.campaign_create(name="other", kind="ssi", empty=True)  # nothing of it exported
    Item.objects.create(campaign=one_rater, key="unrated", response="?", open_slots=1)

    rows = [json.loads(row) for row in export_text(one_rater, "jsonl").splitlines()]

    assert [row["key"] for row in rows] == ["a", "b"]
    assert rows[0] == {
        "key": "a",
        "labels": {
            attribute: {
                "label": 1,
                "yes": 1,
                "no": 0,
                "maybe": 0,
                "yes_fraction": 1.0,
                "aggregation": "majority",
            }
            for attribute in ("interesting", "sensible", "specific")
        },
        "rules_version": "2",
        "raters": 1,
        "aggregations": ["majority"],  # no Dawid–Skene run (tests/annotation/test_rater_models.py)
    }
    assert "safety_score" not in rows[0]


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


def test_the_csv_export_has_one_row_per_item_and_attribute(one_rater) -> None:
    import_lines(one_rater, *rating("a, with a comma", "r1", YES3), *rating("b", "r1", {"sensible": "maybe"}))

    rows = list(csv.reader(io.StringIO(export_text(one_rater, "csv"))))

    assert rows[0] == list(consensus_export.CSV_HEADER)
    assert len(rows) == 1 + 2 * 3
    assert rows[1] == [
        "a, with a comma",
        "interesting",
        "1",
        "1",
        "0",
        "0",
        "1.0",
        "2",
        "1",
        "majority",
        "",
        "",
    ]
    assert ["b", "sensible", "0", "0", "0", "1", "0.0", "2", "1", "majority", "", ""] in rows


def test_the_export_is_one_streamed_query_whatever_the_number_of_items(
    one_rater, django_assert_num_queries
) -> None:
    import_lines(one_rater, *[obj for n in range(30) for obj in rating(f"k{n}", "r1", {"sensible": "no"})])

    with django_assert_num_queries(1):
        lines = list(consensus_export.consensus_lines(campaign=one_rater, format="jsonl"))

    assert len(lines) == 30


def test_incomplete_items_are_left_out_and_counted(ssi) -> None:
    # "full" has all five raters; "two" has two of five, both yes (it used to be exported as 0).
    five = [obj for n in range(5) for obj in rating("full", f"r{n}", YES3)]
    import_lines(ssi, *five, *rating("two", "r1", YES3), *rating("two", "r2", YES3))
    Item.objects.create(campaign=ssi, key="unrated", response="?", open_slots=0)

    rows = [json.loads(row) for row in export_text(ssi, "jsonl").splitlines()]
    csv_keys = {row[0] for row in csv.reader(io.StringIO(export_text(ssi, "csv")))}

    assert [row["key"] for row in rows] == ["full"]
    assert csv_keys == {"key", "full"}
    assert consensus_export.incomplete_count(campaign=ssi) == 2  # "two" and "unrated"


def test_an_unknown_export_format_is_refused(ssi) -> None:
    with pytest.raises(AnnotationError, match="not an export format"):
        consensus_export.consensus_lines(campaign=ssi, format="xml")


# --- API ------------------------------------------------------------------------------------


def export_url(campaign: Campaign, format: str = "jsonl") -> str:
    return reverse("campaign-consensus-export", kwargs={"campaign_id": campaign.pk}) + f"?format={format}"


@pytest.mark.parametrize(("who", "format"), [(Role.ADMIN, "jsonl"), (Role.RESEARCHER, "csv")])
def test_admins_and_researchers_download_the_consensus_streamed(who, format, ssi, users, api_client) -> None:
    import_lines(ssi, *rating("a", "r1", YES3))
    api_client.force_login(users[who])

    response = api_client.get(export_url(ssi, format))

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == consensus_export.CONTENT_TYPES[format]
    assert response["Content-Disposition"] == f'attachment; filename="consensus-{ssi.pk}.{format}"'
    assert response["X-Incomplete-Items"] == "1"  # one rater of the five: left out, and counted
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
