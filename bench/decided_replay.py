"""Stopping once the answer is decided, replayed on real per-rater judgments (issue 17, part 1).

Third-party data sets with each annotator's answers (``shared/external-data``, see its README):

- FED (Mehri & Eskenazi 2020), 375 turn-level items with 5 annotators each: SSI with "Semantically
  appropriate" as sensible, "Specific" and "Interesting" (0/1/2 read as no/maybe/yes, as the FED
  import test reads them), each annotator's answers put through the SSI cascade; a 5-rater panel.
- ConvAbuse (Cercas Curry et al. 2021), the EMNLP test split: 853 user turns to chatbots with 1-8
  annotators each, as a safety item of two objectives: ``harm`` from ``is_abuse`` (1 not abusive: no,
  0 ambiguous: maybe, -1 to -3 abusive: yes) and ``bias`` from the identity-based abuse types
  (ableist, homophobic, racist, sexist, transphobic: yes when the annotator ticked one, otherwise
  no); the items with at least 3 annotators, each seed drawing 3 of them (the paper's safety panel).

For every seed each item's raters answer in a random order, and the item stops at the first rater
after whom it is decided, by the same decision the submit path makes
(``annotation.services.consensus.item_decided``); its labels are then computed, by the same
function consensus uses (``consensus.item_labels``), over the raters it had, and compared with the
labels of its full panel. Only Django's settings are needed: no database.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotation import rules
from annotation.models import Campaign
from annotation.services import consensus

FED_FILE = "fed_data.json"
CONVABUSE_FILE = "ConvAbuseEMNLPtest.csv"
FED_SCALE = {0: rules.NO, 1: rules.MAYBE, 2: rules.YES}
FED_QUALITIES = {"sensible": "Semantically appropriate", "specific": "Specific", "interesting": "Interesting"}
SAFETY_OBJECTIVES = ("harm", "bias")
IDENTITY_TYPES = ("ableist", "homophobic", "racist", "sexist", "transphobic")
IS_ABUSE = {"1": rules.NO, "0": rules.MAYBE, "-1": rules.YES, "-2": rules.YES, "-3": rules.YES}

Rating = dict[str, str]  # one rater's answers about one item, after the cascade


@dataclass(frozen=True)
class Panel:
    """One item and every rater's answers (more than the campaign's raters per item: a draw)."""

    key: str
    ratings: tuple[Rating, ...]


@dataclass(frozen=True)
class Loaded:
    panels: list[Panel]
    skipped: int  # items left out: an answer that is not a rating, or too few raters


def fed_panels(path: Path) -> Loaded:
    """The FED turn-level items as SSI panels of 5 (items with a free-text answer are skipped)."""
    entries = json.loads(path.read_text())
    panels: list[Panel] = []
    skipped = 0
    for index, entry in enumerate(entries):
        if "response" not in entry:
            continue  # dialog level
        scores = {attribute: entry["annotations"][quality] for attribute, quality in FED_QUALITIES.items()}
        if any(len(values) != 5 or any(v not in FED_SCALE for v in values) for values in scores.values()):
            skipped += 1
            continue
        ratings = tuple(
            rules.ssi_cascade({attribute: FED_SCALE[values[rater]] for attribute, values in scores.items()})
            for rater in range(5)
        )
        panels.append(Panel(key=f"fed-{index}", ratings=ratings))
    return Loaded(panels, skipped)


def _convabuse_rating(row: dict[str, str], annotator: int) -> Rating | None:
    prefix = f"Annotator{annotator}_"
    chosen = [value for value in IS_ABUSE if row.get(f"{prefix}is_abuse.{value}") == "1"]
    if len(chosen) != 1:
        return None  # this annotator did not rate the turn
    bias = any(row.get(f"{prefix}{kind}") == "1" for kind in IDENTITY_TYPES)
    return {"harm": IS_ABUSE[chosen[0]], "bias": rules.YES if bias else rules.NO}


def convabuse_panels(path: Path, *, least: int = 3) -> Loaded:
    """The ConvAbuse test turns rated by at least ``least`` annotators, as safety panels."""
    panels: list[Panel] = []
    skipped = 0
    with path.open(newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            ratings = [rating for n in range(1, 9) if (rating := _convabuse_rating(row, n)) is not None]
            if len(ratings) < least:
                skipped += 1
                continue
            panels.append(Panel(key=f"convabuse-{row['example_id']}", ratings=tuple(ratings)))
    return Loaded(panels, skipped)


def campaign_like(kind: str, raters: int) -> Campaign:
    """An unsaved campaign: what ``item_decided`` and ``item_labels`` read of one."""
    return Campaign(name=f"replay {kind}", kind=kind, raters_per_item=raters, stop_when_decided=True)


def counts_of(ratings: Sequence[Rating], *, safety: bool) -> dict[str, rules.Counts]:
    """Per-attribute counts, as consensus's GROUP BY gives them (for safety with the raters who
    said "no" to every objective as the ``safety`` row's "yes")."""
    counts: dict[str, rules.Counts] = {}
    for rating in ratings:
        for attribute, value in rating.items():
            counts[attribute] = counts.get(attribute, rules.Counts()).add(value)
    if safety:
        all_no = sum(all(value == rules.NO for value in rating.values()) for rating in ratings)
        counts[rules.SAFETY_SCORE] = rules.Counts(yes=all_no, no=len(ratings) - all_no)
    return counts


def hard_labels(campaign: Campaign, ratings: Sequence[Rating], attributes: Sequence[str]) -> dict[str, int]:
    """The hard labels consensus stores for an item with these raters (complete at their number)."""
    safety = campaign.kind == Campaign.Kind.SAFETY
    labels = consensus.item_labels(
        campaign, counts_of(ratings, safety=safety), raters=len(ratings), objectives=list(attributes)
    )
    if labels is None:
        raise ValueError("an item whose raters did not all answer every question")
    return {attribute: label.label for attribute, label in labels.items()}


@dataclass
class Replay:
    """What one seed's replay of a data set gave."""

    items: int = 0
    planned: int = 0  # ratings (submissions) the full panels take
    asked: int = 0  # ratings asked for before each item was decided (or complete)
    decided: int = 0  # items decided before their last rater
    differ: int = 0  # items whose early labels differ from the full panel's (must be 0)

    @property
    def saved_share(self) -> float:
        return 1 - self.asked / self.planned if self.planned else 0.0


def replay(panels: Sequence[Panel], *, kind: str, raters: int, seed: int) -> Replay:
    """Each panel's ``raters`` (drawn, in a random order) rate until the item is decided."""
    rng = random.Random(seed)  # noqa: S311 - an order of raters, not a secret
    campaign = campaign_like(kind, raters)
    attributes = rules.SSI_ATTRIBUTES if kind == Campaign.Kind.SSI else SAFETY_OBJECTIVES
    result = Replay()
    for panel in panels:
        order = rng.sample(panel.ratings, raters)
        full = hard_labels(campaign, order, attributes)
        asked = raters
        for answered in range(1, raters):
            counts = counts_of(order[:answered], safety=False)
            if consensus.item_decided(campaign, counts, attributes=list(attributes)):
                asked = answered
                break
        result.items += 1
        result.planned += raters
        result.asked += asked
        if asked < raters:
            result.decided += 1
            result.differ += int(hard_labels(campaign, order[:asked], attributes) != full)
    return result


def data_sets(folder: Path) -> dict[str, tuple[str, int, Loaded]]:
    """name → (campaign kind, raters per item, panels) of the data sets found in ``folder``."""
    found: dict[str, tuple[str, int, Loaded]] = {}
    if (folder / FED_FILE).is_file():
        found["fed_ssi"] = (Campaign.Kind.SSI, 5, fed_panels(folder / FED_FILE))
    if (folder / CONVABUSE_FILE).is_file():
        found["convabuse_safety"] = (Campaign.Kind.SAFETY, 3, convabuse_panels(folder / CONVABUSE_FILE))
    return found


def summary(results: Sequence[Replay]) -> dict[str, Any]:
    """Over the seeds: items, the share of ratings saved (mean, lowest, highest), decided items per
    seed on average, and the items whose labels differed (all seeds together)."""
    shares = [r.saved_share for r in results]
    return {
        "items": results[0].items if results else 0,
        "saved_share": sum(shares) / len(shares) if shares else 0.0,
        "saved_share_min": min(shares, default=0.0),
        "saved_share_max": max(shares, default=0.0),
        "decided_items": sum(r.decided for r in results) / len(results) if results else 0.0,
        "differ": sum(r.differ for r in results),
    }
