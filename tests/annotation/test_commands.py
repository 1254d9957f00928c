"""The annotation management commands: create_campaign, import_judgments, aggregate, export_consensus."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment
from annotation.services import assignments, campaigns, judgment_imports
from dialogs.models import Dialog
from groundwork.roles import Role
from tests.annotation.helpers import YES3, line, rating, ssi_campaign
from tests.factories import RoleFactory, UserFactory, dialog_with_turns

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def write_jsonl(path: Path, objects: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objects), encoding="utf-8")
    return path


# --- create_campaign --------------------------------------------------------------------------


def test_create_campaign_takes_the_model_turns_of_the_filtered_dialogs() -> None:
    role = RoleFactory(slug="everest")
    dialog_with_turns(
        ["Hi", "Hello", "Who are you?", "A mountain."], external_id="in", purpose="role", role=role
    )
    dialog_with_turns(["Hi", "Hello"], external_id="other-role", purpose="role")
    dialog_with_turns(["Hi", "Hello"], external_id="quality", purpose="quality", role=role)
    old = dialog_with_turns(["Hi", "Hello"], external_id="old", purpose="role", role=role)
    Dialog.objects.filter(pk=old.pk).update(created_at=timezone.make_aware(datetime(2020, 1, 1)))

    out, _ = run(
        "create_campaign",
        "--kind=helpfulness",
        "--name=Everest",
        "--purpose=role",
        "--role=everest",
        "--from=2021-01-01",
        f"--to={timezone.localdate().isoformat()}",
        "--raters=2",
    )

    campaign = Campaign.objects.get(name="Everest")
    assert "2 items" in out
    assert (campaign.kind, campaign.raters_per_item) == ("helpfulness", 2)
    assert sorted(campaign.items.values_list("key", flat=True)) == ["in#1", "in#3"]
    assert campaign.filters["role"] == "everest"
    assert campaign.filters["created_from"].startswith("2021-01-01")


def test_create_campaign_of_safety_with_chosen_objectives_or_empty() -> None:
    dialog_with_turns(["Say it", "No."], external_id="s", purpose="safety")

    out, _ = run("create_campaign", "--kind=safety", "--name=S", "--objectives=harm, bias")
    empty, _ = run("create_campaign", "--kind=ssi", "--name=E", "--empty")

    campaign = Campaign.objects.get(name="S")
    assert sorted(campaign.objectives.values_list("slug", flat=True)) == ["bias", "harm"]
    assert (campaign.raters_per_item, campaign.items.count()) == (3, 1)
    assert "1 items" in out
    assert "0 items" in empty
    assert not Campaign.objects.get(name="E").items.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind=poetry", "--name=x"], "Unknown campaign kind 'poetry'"),
        (["--kind=safety", "--name=x", "--objectives=harm,nope"], "Unknown safety objective"),
        (["--kind=ssi", "--name=x", "--objectives=harm"], "for safety campaigns only"),
        (["--kind=ssi", "--name=taken"], "already exists"),
        (["--kind=ssi", "--name=x", "--purpose=gossip"], "Unknown purpose 'gossip'"),
        (["--kind=ssi", "--name=x", "--role=nobody"], "no role with slug 'nobody'"),
        (["--kind=ssi", "--name=x", "--from=yesterday"], "'yesterday' is not a date"),
        (["--kind=ssi", "--name=x", "--from=2024-02-01", "--to=2024-01-01"], "--from is after --to"),
        (["--kind=ssi", "--name=x", "--raters=0"], "at least 1"),
    ],
)
def test_create_campaign_refuses_bad_input_clearly(args: list[str], message: str) -> None:
    campaigns.campaign_create(name="taken", kind="ssi", empty=True)

    with pytest.raises(CommandError, match=message):
        run("create_campaign", *args)

    assert list(Campaign.objects.values_list("name", flat=True)) == ["taken"]


# --- import_judgments -------------------------------------------------------------------------


def test_import_judgments_imports_and_labels_the_complete_items(tmp_path: Path) -> None:
    campaigns.campaign_create(name="ext", kind="ssi", raters_per_item=2, empty=True)
    ratings = [*rating("a", "r1", YES3), *rating("a", "r2", YES3), *rating("b", "r1", YES3)]
    path = write_jsonl(tmp_path / "judgments.jsonl", ratings)

    out, _ = run("import_judgments", str(path), "--campaign=ext")

    assert "3 ratings (9 judgments)" in out
    assert "2 new items, 2 new raters; 1 items labelled, 1 incomplete" in out
    assert Judgment.objects.count() == 9
    assert ConsensusLabel.objects.filter(item__key="a").count() == 3
    assert not ConsensusLabel.objects.filter(item__key="b").exists()  # one of its two raters


def test_import_judgments_names_the_line_and_field_and_writes_nothing(tmp_path: Path) -> None:
    campaigns.campaign_create(name="ext", kind="ssi", empty=True)
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [*rating("a", "r1", YES3), line("a", "r2", "sensible", "often"), line("a", "r3", "witty", "yes")],
    )

    with pytest.raises(CommandError, match="2 bad line"):
        run("import_judgments", str(path), "--campaign=ext")

    stderr = io.StringIO()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command("import_judgments", str(path), "--campaign=ext", stderr=stderr)
    assert f"{path}:4: value: 'often' is not an answer" in stderr.getvalue()
    assert f"{path}:5: attribute: 'witty' is not a question" in stderr.getvalue()
    assert not Item.objects.exists()
    assert not Assignment.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl", "--campaign=ext"], "no such file"),
        (["judgments.jsonl", "--campaign=nope"], "no campaign named 'nope'"),
    ],
)
def test_import_judgments_needs_a_file_and_a_campaign(args, message, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "judgments.jsonl", rating("a", "r1", YES3))
    campaigns.campaign_create(name="ext", kind="ssi", empty=True)

    with pytest.raises(CommandError, match=message):
        run("import_judgments", *args)


# --- aggregate --------------------------------------------------------------------------------


def test_aggregate_labels_the_whole_campaign_in_the_foreground() -> None:
    campaign = ssi_campaign(items=2, raters=1, name="agg")
    worker = UserFactory(role=Role.CROWDWORKER)
    for _ in range(2):
        lease = assignments.assignment_lease_next(worker=worker, campaign=campaign)
        assignments.judgment_submit(assignment_id=lease.pk, worker=worker, answers=YES3)
    ConsensusLabel.objects.all().delete()  # as if the per-item tasks never ran

    out, _ = run("aggregate", "--campaign=agg")

    assert "2 items labelled; 0 incomplete items" in out
    assert ConsensusLabel.objects.filter(item__campaign=campaign, label=1).count() == 6


def test_aggregate_of_an_unknown_campaign_is_an_error() -> None:
    with pytest.raises(CommandError, match="no campaign named 'nope'"):
        run("aggregate", "--campaign=nope")


# --- export_consensus -------------------------------------------------------------------------


@pytest.fixture
def labelled() -> Campaign:
    campaign = campaigns.campaign_create(name="done", kind="ssi", raters_per_item=2, empty=True)
    objects = [
        *rating("a", "r1", YES3),
        *rating("a", "r2", YES3),
        *rating("b", "r1", {"sensible": "no"}),
        *rating("b", "r2", {"sensible": "no"}),
        *rating("c", "r1", YES3),  # one of its two raters: incomplete
    ]
    judgment_imports.judgments_import(
        campaign=campaign, lines=judgment_imports.parse_objects(objects), source="t"
    )
    return campaign


def test_export_consensus_writes_jsonl_through_a_partial_file(labelled, tmp_path: Path) -> None:
    path = tmp_path / "out" / "consensus.jsonl"

    out, _ = run("export_consensus", "--campaign=done", str(path))

    assert "consensus labels of 2 items exported; 1 incomplete items left out" in out
    rows = [json.loads(text) for text in path.read_text().splitlines()]
    assert [row["key"] for row in rows] == ["a", "b"]
    assert rows[0]["labels"]["sensible"]["label"] == 1
    assert not list(path.parent.glob("*.partial"))


def test_export_consensus_writes_csv_to_stdout(labelled) -> None:
    out, _ = run("export_consensus", "--campaign=done", "--format=csv", "-")

    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == [
        "key",
        "attribute",
        "label",
        "yes",
        "no",
        "maybe",
        "yes_fraction",
        "rules_version",
        "raters",
        "aggregation",
        "dawid_skene_label",
        "dawid_skene_probability",
    ]
    assert len(rows) == 1 + 2 * 3


def test_export_consensus_writes_jsonl_to_stdout_one_line_per_item(labelled) -> None:
    out, err = run("export_consensus", "--campaign=done", "-")

    assert [json.loads(text)["key"] for text in out.splitlines()] == ["a", "b"]
    assert "1 incomplete items left out" in err


def test_export_consensus_refuses_an_unknown_campaign_or_format(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no campaign named"):
        run("export_consensus", "--campaign=nope", str(tmp_path / "x.jsonl"))
    with pytest.raises(CommandError, match="invalid choice: 'xml'"):
        run("export_consensus", "--campaign=nope", "--format=xml", "-")
    assert not (tmp_path / "x.jsonl").exists()
