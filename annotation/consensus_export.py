"""The consensus labels of a campaign, out: one JSON line per labelled item, or CSV with one row
per item × attribute, streamed from the database (the API's download, ``export_consensus``).

Only complete items are exported (all the campaign's raters per item have answered: only they have
labels). Incomplete items are left out, and ``incomplete_count`` says how many there are: the API
sends it in the ``X-Incomplete-Items`` header, ``export_consensus`` prints it.

Each label says which aggregation made it: ``majority`` (the paper's rules, ``annotation.rules``),
and, once the campaign has been aggregated with Dawid–Skene (``annotation.services.rater_models``),
the rater-aware label beside it (``dawid_skene``: its hard label and the posterior probability
that the label is 1, the soft label).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import IO, Any

from django.db.models import F, FilteredRelation, Q

from annotation import rules, selectors
from annotation.errors import AnnotationError
from annotation.models import Campaign, ConsensusLabel, Item, item_complete

BATCH_SIZE = 2000

EXPORT_FORMATS = ("jsonl", "csv")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
INCOMPLETE_HEADER = "X-Incomplete-Items"  # the API's response header: incomplete items left out
MAJORITY = "majority"
DAWID_SKENE = "dawid_skene"
CSV_HEADER = (
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
)
_LABEL_COLUMNS = ("attribute", "label", "yes", "no", "maybe", "yes_fraction", "rules_version")


def _label_groups(campaign: Campaign) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(item key, its labels) for each labelled complete normal item, in item order, streamed from the
    database in one query (labels an incomplete item kept from an older rules version are not read).
    Each label row carries ``item__judgment_count``: the raters the item had; and ``ds__label`` and
    ``ds__probability``: those of the campaign's Dawid–Skene run for it, or None."""
    rows = (
        ConsensusLabel.objects.filter(
            item_complete("item__", campaign.raters_per_item),
            item__campaign=campaign,
            item__kind=Item.Kind.NORMAL,
        )
        .annotate(
            ds=FilteredRelation(
                "item__rater_aware_labels", condition=Q(item__rater_aware_labels__attribute=F("attribute"))
            )
        )
        .order_by("item_id", "attribute")
        .values(
            "item_id", "item__key", "item__judgment_count", *_LABEL_COLUMNS, "ds__label", "ds__probability"
        )
        .iterator(chunk_size=BATCH_SIZE)
    )
    for (_, key), labels in groupby(rows, key=lambda row: (row["item_id"], row["item__key"])):
        yield key, list(labels)


def _jsonl_item(campaign: Campaign, key: str, labels: list[dict[str, Any]]) -> str:
    record: dict[str, Any] = {
        "key": key,
        "labels": {row["attribute"]: _jsonl_label(row) for row in labels},
        "rules_version": labels[0]["rules_version"],
        "raters": labels[0]["item__judgment_count"],
        "aggregations": [MAJORITY, DAWID_SKENE]
        if any(row["ds__label"] is not None for row in labels)
        else [MAJORITY],
    }
    if campaign.kind == Campaign.Kind.SAFETY and rules.SAFETY_SCORE in record["labels"]:
        record["safety_score"] = record["labels"][rules.SAFETY_SCORE]["label"]
    return json.dumps(record, ensure_ascii=False) + "\n"


def _jsonl_label(row: dict[str, Any]) -> dict[str, Any]:
    label = {name: row[name] for name in ("label", "yes", "no", "maybe", "yes_fraction")}
    label["aggregation"] = MAJORITY
    if row["ds__label"] is not None:
        label[DAWID_SKENE] = {
            "aggregation": DAWID_SKENE,
            "label": row["ds__label"],
            "probability": row["ds__probability"],
        }
    return label


class _Echo:
    """A file-like object whose write returns what it was given: ``csv.writer`` then formats one row."""

    def write(self, value: str) -> str:
        return value


def _csv_item(writer: Any, key: str, labels: list[dict[str, Any]]) -> str:
    return "".join(
        writer.writerow(
            [
                key,
                *(row[name] for name in _LABEL_COLUMNS),
                row["item__judgment_count"],
                MAJORITY,
                *_blank_none(row["ds__label"], row["ds__probability"]),
            ]
        )
        for row in labels
    )


def _blank_none(*values: Any) -> list[Any]:
    return ["" if value is None else value for value in values]


def _formatter(campaign: Campaign, format: str) -> tuple[str, Callable[[str, list[dict[str, Any]]], str]]:
    """The header and the per-item text of an export format."""
    if format == "jsonl":
        return "", partial(_jsonl_item, campaign)
    if format == "csv":
        writer = csv.writer(_Echo())
        return writer.writerow(CSV_HEADER), partial(_csv_item, writer)
    raise AnnotationError(f"format: {format!r} is not an export format (one of {', '.join(EXPORT_FORMATS)}).")


def incomplete_count(*, campaign: Campaign) -> int:
    """How many normal items of ``campaign`` are incomplete (fewer judgments than its raters per item,
    none included): left out of the export."""
    return selectors.campaigns_completeness(campaigns=[campaign])[campaign.pk].incomplete


def consensus_lines(*, campaign: Campaign, format: str) -> Iterator[str]:
    """The consensus export of ``campaign``, item by item, for a streaming response.

    ``jsonl``: one JSON line per labelled (complete) item, ``{"key", "labels": {attribute: {"label", "yes",
    "no", "maybe", "yes_fraction", "aggregation": "majority"[, "dawid_skene": {"aggregation":
    "dawid_skene", "label", "probability"}]}}, "rules_version", "raters", "aggregations"}``;
    safety items also carry ``"safety_score"``, the label of the ``safety`` row (METHOD.md §3).
    ``csv``: one row per labelled item × attribute under the header ``CSV_HEADER`` (the Dawid–Skene
    columns blank where there is none). ``raters`` is how many raters the item had: the campaign's
    raters per item, or fewer for an item decided before its last rater (a campaign that stops once
    the answer is decided), whose counts and ``yes_fraction`` are over those raters. An unknown
    format raises ``AnnotationError`` at once.
    """
    header, item_text = _formatter(campaign, format)

    def lines() -> Iterator[str]:
        if header:
            yield header
        for key, labels in _label_groups(campaign):
            yield item_text(key, labels)

    return lines()


def consensus_write(*, campaign: Campaign, stream: IO[str], format: str) -> int:
    """Write the consensus export (see ``consensus_lines``) to ``stream``; returns the items written."""
    header, item_text = _formatter(campaign, format)
    if header:
        stream.write(header)
    items = 0
    for key, labels in _label_groups(campaign):
        stream.write(item_text(key, labels))
        items += 1
    return items


def consensus_export_file(*, campaign: Campaign, path: Path, format: str) -> int:
    """Write the consensus export to ``path``; returns the items written.

    Written to a ``.partial`` file first and renamed, so a reader never sees half a file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_name(path.name + ".partial")
    try:
        with partial_path.open("w", encoding="utf-8", newline="") as stream:
            items = consensus_write(campaign=campaign, stream=stream, format=format)
        os.replace(partial_path, path)
    finally:
        partial_path.unlink(missing_ok=True)
    return items
