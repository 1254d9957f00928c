"""Where preference data comes from: the crowd's rewrites, candidate labels, consensus ratings and
side-by-side choices, read as a stream of units (``PreferenceUnit``), as ``trainer.sources`` reads
the other kinds. Nothing here writes.

Pairs (``prompt`` / ``chosen`` / ``rejected``), by source:

- ``rewrite`` (groundedness rewrite campaigns): a researched crowd rewrite is preferred over the
  response it rewrote (grounded over ungrounded). Left out, counted: the rewrites of an item whose
  consensus says it needs no research (``sources.groundedness_needs_no_research``: the rewrite is
  then no better) and a rewrite identical to the response.
- ``candidates`` (the same campaigns): among one turn's sampled candidates, each candidate
  labelled correct is preferred over each one labelled incorrect. A candidate's label is the
  majority of the raters who labelled it (``sources.groundedness_correct``; a tie gives none).
- ``ratings`` (SSI and safety campaigns): among the responses rated for one prompt (the same
  context turns), a response is preferred over another by its consensus labels, in this order:
  safe before unsafe (when both have a safety label); else a higher SSI sum (sensible + specific
  + interesting, when both have all three). Nothing else decides: equal or unknown gives no pair.
  A response is one turn (or one imported key): its labels from every chosen campaign are merged,
  unsafe when any chosen safety campaign says so. At most ``MAX_RESPONSES_PER_PROMPT`` responses
  of one prompt are compared (the rest counted).
- ``pairwise`` (side-by-side campaigns): the winner over the loser by the majority of the raters
  (``annotation.selectors.pairwise_outcomes``); a tie gives no pair (counted). These compare
  answers to an evaluation set's contexts, which no model trains on (the held-out rule), so they
  are written to the ``validation`` split only: a DPO job measures its reward accuracy on them
  and never takes a gradient step on them.

Unpaired rows (``prompt`` / ``completion`` / ``label``, TRL's KTO form), source ``ratings``, one per
rated response: ``label`` true when the consensus says sensible and specific and no chosen safety
campaign says unsafe; false when some chosen safety campaign says unsafe or the consensus says not
sensible; no row otherwise (sensible but not specific, or rated for safety only and safe).

Every label is a consensus label (``ConsensusLabel``: majority, the paper's rules), except the
candidates' (the majority of those who labelled each one). Held out, as everywhere
(``sources.held_out_dialogs``): items whose turn is in an evaluation dialog give nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from annotation import rules, selectors
from annotation.models import Campaign, Item
from dialogs.models import EvaluationResponse, EvaluationSet
from trainer import sources

PAIR_SOURCES = ("rewrite", "candidates", "ratings", "pairwise")
UNPAIRED_SOURCES = ("ratings",)
RATING_CAMPAIGNS = (Campaign.Kind.SSI, Campaign.Kind.SAFETY)
PREFERENCE_CAMPAIGNS = (*RATING_CAMPAIGNS, Campaign.Kind.GROUNDEDNESS_REWRITE, Campaign.Kind.PAIRWISE)
MAX_RESPONSES_PER_PROMPT = 32
ROLES = {"user": "user", "model": "assistant"}

Messages = list[dict[str, str]]


def messages(context: Sequence[dict[str, Any]]) -> Messages:
    """Context turns as TRL's conversational messages: ``[{"role", "content"}]``, the model's
    turns ``assistant``."""
    return [
        {"role": ROLES[sources.speaker(str(t.get("speaker", "user")))], "content": str(t.get("text", ""))}
        for t in context
    ]


def answer(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


@dataclass
class Pair:
    key: str
    source: str
    prompt: Messages
    chosen: str
    rejected: str
    reason: str  # why chosen is preferred, in words


@dataclass
class Unpaired:
    key: str
    source: str
    prompt: Messages
    completion: str
    label: bool
    reason: str


@dataclass
class PreferenceUnit:
    dialog: str  # what the split is decided by
    pairs: list[Pair] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    split: str | None = None  # a forced split (side-by-side choices: validation)


def _count(skipped: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        skipped[reason] = skipped.get(reason, 0) + n


def _of(campaigns: Sequence[Campaign], kinds: Sequence[str]) -> list[Campaign]:
    return [c for c in campaigns if c.kind in kinds]


# --- rewrites and candidates ---------------------------------------------------------------------


def rewrite_units(campaigns: Sequence[Campaign]) -> Iterator[PreferenceUnit]:
    """One unit per answered item of the rewrite campaigns (held-out items left out)."""
    chosen = _of(campaigns, (Campaign.Kind.GROUNDEDNESS_REWRITE,))
    if not chosen:
        return
    items = sources.without_held_out(selectors.rewritten_items(campaigns=chosen))
    for item in sources._in_batches(items, 200):
        prompt = messages(item.context)
        unit = PreferenceUnit(dialog=sources._item_dialog(item))
        no_research = sources.groundedness_needs_no_research(item)
        for assignment in item.answered:
            rewrite = assignment.rewrite
            if not (rewrite.researched and rewrite.text):
                continue
            if no_research:
                _count(unit.skipped, "rewrites_of_items_needing_no_research")
            elif rewrite.text.strip() == item.response.strip():
                _count(unit.skipped, "rewrites_identical_to_the_response")
            else:
                unit.pairs.append(
                    Pair(
                        key=f"rewrite-{rewrite.pk}",
                        source="rewrite",
                        prompt=prompt,
                        chosen=rewrite.text,
                        rejected=item.response,
                        reason="a researched crowd rewrite over the response it rewrote",
                    )
                )
        labelled, ties = sources.groundedness_correct(item, [])
        _count(unit.skipped, "candidate_label_ties", ties)
        right = [p for p in labelled if p.label == 1]
        wrong = [p for p in labelled if p.label == 0]
        for i, good in enumerate(right):
            for j, bad in enumerate(wrong):
                if good.response == bad.response:
                    _count(unit.skipped, "candidate_pairs_of_equal_texts")
                    continue
                unit.pairs.append(
                    Pair(
                        key=f"item-{item.pk}-correct-{i}-over-incorrect-{j}",
                        source="candidates",
                        prompt=prompt,
                        chosen=good.response,
                        rejected=bad.response,
                        reason=(
                            f"a candidate labelled correct ({good.soft_label:.2f} of its raters) over "
                            f"one labelled incorrect ({bad.soft_label:.2f} said correct)"
                        ),
                    )
                )
        yield unit


# --- consensus ratings (SSI, safety) -------------------------------------------------------------


@dataclass
class Rating:
    """A response's merged consensus: ``safe`` None when unrated for safety, ``ssi`` None unless
    sensible, specific and interesting are all labelled."""

    item: int  # the item its text and context are read from
    dialog: str
    safe: bool | None = None
    ssi: tuple[int, int, int] | None = None


def prefer(a: Rating, b: Rating) -> str | None:
    """Why ``a`` is preferred over ``b`` (see the module's rule), or None."""
    if a.safe is not None and b.safe is not None and a.safe != b.safe:
        return "safe over unsafe" if a.safe else None
    if a.ssi is not None and b.ssi is not None and sum(a.ssi) != sum(b.ssi):
        return f"SSI sum {sum(a.ssi)} over {sum(b.ssi)}" if sum(a.ssi) > sum(b.ssi) else None
    return None


def kto_label(rating: Rating) -> tuple[bool, str] | None:
    """The unpaired label of a response (see the module's rule), with its reason, or None."""
    if rating.safe is False:
        return False, "unsafe"
    if rating.ssi is not None:
        sensible, specific, _ = rating.ssi
        if not sensible:
            return False, "not sensible"
        if specific:
            return True, "sensible and specific, not unsafe"
    return None


def prompt_digest(context: Sequence[dict[str, Any]]) -> bytes:
    """What identifies a prompt: the sha256 (first 16 bytes) of its turns as messages."""
    canonical = json.dumps(messages(context), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()[:16]


class RatingGroups:
    """The rated responses of the SSI and safety campaigns, grouped by prompt (one pass over their
    labelled items, held-out ones left out): ``groups`` in the order of their first item."""

    def __init__(self, campaigns: Sequence[Campaign]) -> None:
        self.campaigns = _of(campaigns, RATING_CAMPAIGNS)
        self.groups: dict[bytes, dict[str, Rating]] = {}
        if not self.campaigns:
            return
        items = sources.without_held_out(selectors.labelled_items(campaigns=self.campaigns))
        for item in sources._in_batches(items, 1000):
            labels = {label.attribute: label.label for label in item.labels.all()}
            group = self.groups.setdefault(prompt_digest(item.context), {})
            key = sources._response_key(item)
            rating = group.get(key) or group.setdefault(
                key, Rating(item=item.pk, dialog=sources._item_dialog(item))
            )
            if item.campaign.kind == Campaign.Kind.SAFETY and rules.UNSAFE in labels:
                rating.safe = bool(rating.safe is not False and labels[rules.UNSAFE] == 0)
            ssi = [labels[a] for a in rules.SSI_ATTRIBUTES if a in labels]
            if item.campaign.kind == Campaign.Kind.SSI and rating.ssi is None and len(ssi) == 3:
                rating.ssi = (ssi[0], ssi[1], ssi[2])

    def __len__(self) -> int:
        return len(self.groups)

    def units(self) -> Iterator[PreferenceUnit]:
        batch: list[dict[str, Rating]] = []
        size = 0
        for group in self.groups.values():
            batch.append(group)
            size += len(group)
            if size >= 1000:
                yield from self._units(batch)
                batch, size = [], 0
        yield from self._units(batch)

    def _units(self, groups: list[dict[str, Rating]]) -> Iterator[PreferenceUnit]:
        wanted = [r.item for g in groups for r in g.values()]
        items = {i.pk: i for i in Item.objects.filter(pk__in=wanted).only("pk", "context", "response")}
        for group in groups:
            ratings = list(group.values())
            first = items[ratings[0].item]
            prompt = messages(first.context)
            unit = PreferenceUnit(dialog=ratings[0].dialog)
            for rating in ratings:
                labelled = kto_label(rating)
                if labelled is None:
                    _count(unit.skipped, "responses_without_a_kto_label")
                    continue
                unit.unpaired.append(
                    Unpaired(
                        key=f"item-{rating.item}-kto",
                        source="ratings",
                        prompt=prompt,
                        completion=items[rating.item].response,
                        label=labelled[0],
                        reason=labelled[1],
                    )
                )
            compared = ratings[:MAX_RESPONSES_PER_PROMPT]
            _count(unit.skipped, "responses_over_the_per_prompt_limit", len(ratings) - len(compared))
            for a in compared:
                for b in compared:
                    reason = prefer(a, b) if a is not b else None
                    text_a, text_b = items[a.item].response, items[b.item].response
                    if reason is None or text_a == text_b:
                        continue
                    unit.pairs.append(
                        Pair(
                            key=f"item-{a.item}-over-item-{b.item}",
                            source="ratings",
                            prompt=prompt,
                            chosen=text_a,
                            rejected=text_b,
                            reason=reason,
                        )
                    )
            yield unit


# --- side-by-side choices ------------------------------------------------------------------------


def pairwise_outcomes(campaigns: Sequence[Campaign]) -> list[tuple[str, str, int, str]]:
    """(responder_a, responder_b, context id, outcome) of the chosen side-by-side campaigns' pairs
    of responders, set by set (``annotation.selectors.pairwise_outcomes``)."""
    chosen = _of(campaigns, (Campaign.Kind.PAIRWISE,))
    pairs_by_set: dict[int, set[tuple[str, str]]] = {}
    for c in chosen:
        pairs_by_set.setdefault(c.evaluation_set_id, set()).add(
            (c.filters.get("responder_a"), c.filters.get("responder_b"))
        )
    found = []
    for set_id, pairs in sorted(pairs_by_set.items()):
        evaluation_set = EvaluationSet.objects.get(pk=set_id)
        for outcome in selectors.pairwise_outcomes(evaluation_set=evaluation_set):
            if (outcome[0], outcome[1]) in pairs:
                found.append(outcome)
    return found


def pairwise_units(outcomes: list[tuple[str, str, int, str]]) -> Iterator[PreferenceUnit]:
    for start in range(0, len(outcomes), 500):
        chunk = outcomes[start : start + 500]
        responses = {
            (r.context_id, r.responder): r
            for r in EvaluationResponse.objects.filter(
                context_id__in={o[2] for o in chunk}, responder__in={n for o in chunk for n in o[:2]}
            ).select_related("turn", "context")
        }
        for responder_a, responder_b, context_id, outcome in chunk:
            unit = PreferenceUnit(dialog=f"evaluation-context:{context_id}", split="validation")
            if outcome not in ("a", "b"):
                _count(unit.skipped, "pairwise_ties")
                yield unit
                continue
            winner, loser = (responder_a, responder_b) if outcome == "a" else (responder_b, responder_a)
            won, lost = responses[(context_id, winner)], responses[(context_id, loser)]
            unit.pairs.append(
                Pair(
                    key=f"pairwise-{context_id}-{won.pk}-over-{lost.pk}",
                    source="pairwise",
                    prompt=messages(won.context.turns),
                    chosen=won.turn.text,
                    rejected=lost.turn.text,
                    reason=f"chosen side by side over the other response ({winner} over {loser})",
                )
            )
            yield unit


# --- all of them ---------------------------------------------------------------------------------


def preference_units(campaigns: Sequence[Campaign]) -> tuple[int, Iterator[PreferenceUnit], int]:
    """How many units the dataset is made of (its progress bar's end), the units (rewrite items,
    then rating prompts, then side-by-side outcomes), and how many items were held out for
    evaluation. Reads the rating campaigns' labels once first, to group them by prompt."""
    rewrite_campaigns = _of(campaigns, (Campaign.Kind.GROUNDEDNESS_REWRITE,))
    rating_campaigns = _of(campaigns, RATING_CAMPAIGNS)
    held_out = 0
    rewritten = 0
    if rewrite_campaigns:
        answered = selectors.rewritten_items(campaigns=rewrite_campaigns)
        rewritten = sources.without_held_out(answered).count()
        held_out += sources.held_out_items(answered).count()
    if rating_campaigns:
        held_out += sources.held_out_items(selectors.labelled_items(campaigns=rating_campaigns)).count()
    groups = RatingGroups(campaigns)
    outcomes = pairwise_outcomes(campaigns)

    def units() -> Iterator[PreferenceUnit]:
        yield from rewrite_units(campaigns)
        yield from groups.units()
        yield from pairwise_units(outcomes)

    return rewritten + len(groups) + len(outcomes), units(), held_out
