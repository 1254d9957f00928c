"""An evaluation set's crowd work (issue 15): its responses rated blind, the human baseline, side by
side.

- ``evaluation_responses_enqueue`` puts every response of a set (each model version's and the human
  baseline's) that is in no item yet into the set's rating campaigns, by its context's purpose
  (``EVALUATION_RATING_KIND``): quality → SSI (5 raters), safety → safety (3, the active
  objectives), groundedness → groundedness evaluation (3), role → helpfulness and role consistency
  (3). A campaign per set and kind, made on first use and named after the set ("mtb v1 · SSI");
  when that one is closed, the next of the same set and kind ("mtb v1 · SSI (2)") with the same
  raters, objectives and instructions, so every responder is rated under the same conditions.
- Blind: an item shows the context and the response, nothing else. Its key is opaque
  (``response_item_key``: not the responder, nor the response's id, which would group a version's
  responses), the payload and the pages say "model" for every response, and the items of one call
  are inserted in a seeded random order, so raters (served in item order) see responders mixed.
  Responses added later (a version evaluated afterwards, the human responses as they are written)
  come after the items already there.
- ``human_baseline_start``: a campaign of the kind ``human_response`` with one item per context
  without a human response, one writer each; a worker's response is stored by
  ``annotation.services.evaluation_tasks.human_response_submit`` and rated blind with the models'.
  The writer never rates it: the item's ``author`` is the response dialog's ``created_by``.
- ``pairwise_campaign_create``: a ``pairwise`` campaign of one item per context two responders both
  answered, the two responses in a random order per item (seeded, recorded in ``Item.pair``).

Each is idempotent: a call adds only what is not in an item yet. Each holds the set's row lock while
it decides, so two calls never add the same response twice, and locks the set for good
(``evaluation_set_lock``): a set whose responses are rated never changes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils.crypto import salted_hmac

from annotation import selectors
from annotation.errors import AnnotationError
from annotation.models import EVALUATION_RATING_KIND, Campaign, Item
from annotation.services.campaigns import BATCH_SIZE, campaign_create
from dialogs.evaluation_sets import evaluation_set_lock
from dialogs.models import HUMAN_RESPONDER, EvaluationContext, EvaluationResponse, EvaluationSet

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# How a set's campaigns of each kind are named: "<set name> v<version> · <this>".
KIND_NAMES: dict[str, str] = {
    Campaign.Kind.SSI: "SSI",
    Campaign.Kind.SAFETY: "Safety",
    Campaign.Kind.GROUNDEDNESS_EVAL: "Groundedness",
    Campaign.Kind.HELPFULNESS: "Helpfulness",
    Campaign.Kind.HUMAN_RESPONSE: "Human baseline",
    Campaign.Kind.PAIRWISE: "Side by side",
}
# The rating kinds in the order their campaigns are made.
RATING_KINDS: tuple[str, ...] = tuple(dict.fromkeys(EVALUATION_RATING_KIND.values()))
NOT_CLOSED = (Campaign.Status.OPEN, Campaign.Status.PAUSED)

HUMAN_BASELINE_INSTRUCTIONS = (
    "Read the conversation and write the next turn yourself, as the other speaker would. "
    "Make it sensible, specific to the conversation, and interesting where you can; be safe; "
    "when you state facts, make sure they are true. Write plain text."
)
PAIRWISE_INSTRUCTIONS = (
    "Read the conversation and the two responses to it. Choose the better next turn: the one "
    "that is more sensible, specific, interesting, safe and true. Choose a tie only when neither "
    "is better."
)


@dataclass(frozen=True)
class CampaignItems:
    """A campaign and the number of items a call added to it."""

    campaign: Campaign
    added: int


def response_item_key(response: EvaluationResponse | int) -> str:
    """The key of a response's item: opaque (a keyed hash of its id), so that nothing a rater is
    sent names the responder, or lets them group one responder's responses by consecutive ids."""
    pk = response if isinstance(response, int) else response.pk
    return f"response-{salted_hmac('annotation.evaluation-response', str(pk)).hexdigest()[:20]}"


def _seeded(seed: str) -> random.Random:
    """A generator seeded by ``seed``: the same order again for the same call, reproducible. Not
    a secret: what keeps responders hidden is that raters are never told, not the order."""
    return random.Random(seed)  # noqa: S311


def _locked(evaluation_set: EvaluationSet) -> EvaluationSet:
    """The set's row, locked until the transaction ends: one enqueue or start per set at a time."""
    return EvaluationSet.objects.select_for_update().get(pk=evaluation_set.pk)


def _context_turns(context: EvaluationContext) -> list[dict[str, str]]:
    return [{"speaker": turn["speaker"], "text": turn["text"]} for turn in context.turns]


def _newest_open(campaigns: Sequence[Campaign]) -> Campaign | None:
    """The newest of ``campaigns`` (oldest first) that is not closed: the one to add items to."""
    return next((c for c in reversed(campaigns) if c.status in NOT_CLOSED), None)


def _set_campaigns(evaluation_set: EvaluationSet, kind: str) -> list[Campaign]:
    """The set's campaigns of ``kind``, oldest first."""
    return list(
        Campaign.objects.filter(evaluation_set=evaluation_set, kind=kind).order_by("created_at", "id")
    )


def _new_set_campaign(
    evaluation_set: EvaluationSet,
    kind: str,
    *,
    like: Campaign | None,
    created_by: User | None = None,
    raters_per_item: int | None = None,
    instructions: str = "",
    extra_filters: dict[str, Any] | None = None,
) -> Campaign:
    """A new campaign of the set and ``kind``, made empty, named after the set (" (n)" from the
    set's second campaign of the kind on), with the raters, objectives and instructions of
    ``like`` (the same conditions as the campaign it follows), or the kind's defaults."""
    base = f"{evaluation_set.name} v{evaluation_set.version} · {KIND_NAMES[kind]}"
    number = Campaign.objects.filter(evaluation_set=evaluation_set, kind=kind).count() + 1
    name = base if number == 1 else f"{base} ({number})"
    while Campaign.objects.filter(name=name).exists():
        number += 1
        name = f"{base} ({number})"
    objectives = None
    if like is not None and kind == Campaign.Kind.SAFETY:
        objectives = [o.slug for o in like.objectives.all()] or None
    campaign = campaign_create(
        name=name,
        kind=kind,
        raters_per_item=like.raters_per_item if like is not None else raters_per_item,
        objectives=objectives,
        instructions=like.instructions if like is not None else instructions,
        empty=True,
        created_by=created_by,
        evaluation_set=evaluation_set,
    )
    campaign.filters = {
        "evaluation_set": evaluation_set.pk,
        "evaluation_set_name": str(evaluation_set),
        **(extra_filters or {}),
    }
    campaign.save(update_fields=["filters"])
    return campaign


def _insert(items: list[Item]) -> int:
    """Insert ``items`` in their order (the hot path serves them in id order); returns how many
    were new (a key already in the campaign is left alone)."""
    if not items:
        return 0
    campaign_id = items[0].campaign_id
    before = Item.objects.filter(campaign_id=campaign_id).count()
    Item.objects.bulk_create(items, ignore_conflicts=True, batch_size=BATCH_SIZE)
    return Item.objects.filter(campaign_id=campaign_id).count() - before


# --- blind rating -----------------------------------------------------------------------------


def evaluation_responses_enqueue(*, evaluation_set: EvaluationSet) -> list[CampaignItems]:
    """Put every response of ``evaluation_set`` that is in none of the set's items yet into the
    set's rating campaign of its context's purpose (see the module docstring), shuffled; returns
    the campaigns that got items, with how many. Idempotent: a second call adds nothing.

    Every responder's responses go in, the human baseline's too; fallback replies as well (they
    are what the version answered). An item is bound to the response's turn, its author is the
    turn's dialog's writer (none for a model), and its key says nothing of the responder.
    """
    with transaction.atomic():
        evaluation_set = _locked(evaluation_set)
        if not EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set).exists():
            return []
        evaluation_set_lock(evaluation_set=evaluation_set)  # rated: its contexts never change now
        in_item = Item.objects.filter(turn_id=OuterRef("turn_id"), campaign__evaluation_set=evaluation_set)
        pending = list(
            EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set)
            .filter(~Exists(in_item))
            .select_related("context", "turn__dialog")
            .order_by("pk")
        )
        by_kind: dict[str, list[EvaluationResponse]] = defaultdict(list)
        for response in pending:
            by_kind[EVALUATION_RATING_KIND[response.context.purpose]].append(response)
        added: list[CampaignItems] = []
        for kind in RATING_KINDS:
            if by_kind.get(kind):
                siblings = _set_campaigns(evaluation_set, kind)
                campaign = _newest_open(siblings) or _new_set_campaign(
                    evaluation_set,
                    kind,
                    like=siblings[0] if siblings else None,
                    extra_filters={"include_fallback": True},
                )
                added.append(CampaignItems(campaign, _insert(_response_items(campaign, by_kind[kind]))))
    return added


def _response_items(campaign: Campaign, responses: Iterable[EvaluationResponse]) -> list[Item]:
    """The items of ``responses`` in a random order, seeded by the campaign and the responses."""
    items = [
        Item(
            campaign=campaign,
            key=response_item_key(response),
            turn_id=response.turn_id,
            author_id=response.turn.dialog.created_by_id,
            context=_context_turns(response.context),
            response=response.turn.text,
            evaluation_context_id=response.context_id,
            open_slots=campaign.raters_per_item,
        )
        for response in responses
    ]
    _seeded(f"blind:{campaign.pk}:{','.join(item.key for item in items)}").shuffle(items)
    return items


# --- the human baseline -----------------------------------------------------------------------


def human_baseline_start(*, evaluation_set: EvaluationSet, created_by: User | None) -> CampaignItems:
    """Workers write the next turn of the set's contexts: a ``human_response`` campaign with one
    item per context (one writer each), for every context that has no human response and no item
    waiting in an open or paused human baseline campaign of the set. Locks the set (its contexts
    no longer change). Adds to the set's human baseline campaign that is not closed, if any.

    ``AnnotationError`` when there is nothing to write: every context has a human response.
    """
    evaluation_set_lock(evaluation_set=evaluation_set)
    with transaction.atomic():
        evaluation_set = _locked(evaluation_set)
        answered = EvaluationResponse.objects.filter(context=OuterRef("pk"), responder=HUMAN_RESPONDER)
        waiting = Item.objects.filter(
            evaluation_context=OuterRef("pk"),
            campaign__kind=Campaign.Kind.HUMAN_RESPONSE,
            campaign__status__in=NOT_CLOSED,
        )
        contexts = list(evaluation_set.contexts.filter(~Exists(answered), ~Exists(waiting)).order_by("index"))
        siblings = _set_campaigns(evaluation_set, Campaign.Kind.HUMAN_RESPONSE)
        campaign = _newest_open(siblings)
        if campaign is None:
            if not contexts:
                raise AnnotationError(f"Every context of {evaluation_set} has a human response already.")
            campaign = _new_set_campaign(
                evaluation_set,
                Campaign.Kind.HUMAN_RESPONSE,
                like=siblings[0] if siblings else None,
                created_by=created_by,
                instructions=HUMAN_BASELINE_INSTRUCTIONS,
            )
        items = [
            Item(
                campaign=campaign,
                key=f"context-{context.pk}",
                context=_context_turns(context),
                response="",
                evaluation_context=context,
                open_slots=campaign.raters_per_item,
            )
            for context in contexts
        ]
        return CampaignItems(campaign, _insert(items))


# --- side by side -----------------------------------------------------------------------------


def pairwise_campaign_create(
    *,
    evaluation_set: EvaluationSet,
    responder_a: str,
    responder_b: str,
    created_by: User | None,
    raters_per_item: int | None = None,
) -> CampaignItems:
    """Raters compare ``responder_a``'s and ``responder_b``'s responses side by side: a ``pairwise``
    campaign (3 raters by default) with one item per context both answered that no campaign of
    this pair holds yet, the two responses in a random order per item (seeded by the campaign and
    the context; ``Item.pair["first"]`` says whose is shown first). Adds to the pair's campaign that
    is not closed, if any (a pair is the same in either order: that campaign's a and b stay).

    ``AnnotationError`` for the same responder twice, a responder who did not answer the set, or
    nothing new to compare.
    """
    if responder_a == responder_b:
        raise AnnotationError("Choose two different responders to compare.")
    with transaction.atomic():
        evaluation_set = _locked(evaluation_set)
        evaluation_set_lock(evaluation_set=evaluation_set)
        answered = selectors.evaluation_responders(evaluation_set=evaluation_set)
        for responder in (responder_a, responder_b):
            if responder not in answered:
                known = ", ".join(answered) or "nobody yet"
                raise AnnotationError(
                    f"{responder!r} has not answered {evaluation_set} (responders: {known})."
                )
        pair = {responder_a, responder_b}
        siblings = [
            c
            for c in _set_campaigns(evaluation_set, Campaign.Kind.PAIRWISE)
            if {c.filters.get("responder_a"), c.filters.get("responder_b")} == pair
        ]
        open_one = _newest_open(siblings)
        if open_one is not None:  # its orientation wins
            responder_a, responder_b = open_one.filters["responder_a"], open_one.filters["responder_b"]
        compared = set(
            Item.objects.filter(campaign__in=siblings).values_list("evaluation_context_id", flat=True)
        )
        by_context: dict[int, dict[str, EvaluationResponse]] = defaultdict(dict)
        for response in (
            EvaluationResponse.objects.filter(
                context__evaluation_set=evaluation_set, responder__in=[responder_a, responder_b]
            )
            .select_related("context", "turn__dialog")
            .order_by("context__index")
        ):
            by_context[response.context_id][response.responder] = response
        both = [
            (found[responder_a], found[responder_b])
            for context_id, found in by_context.items()
            if len(found) == 2 and context_id not in compared
        ]
        if not both and open_one is None:
            raise AnnotationError(
                f"No context of {evaluation_set} that {responder_a} and {responder_b} both answered "
                "is left to compare."
            )
        if raters_per_item is not None and raters_per_item < 1:
            raise AnnotationError("Raters per item must be at least 1.")
        campaign = open_one or _new_set_campaign(
            evaluation_set,
            Campaign.Kind.PAIRWISE,
            like=siblings[0] if siblings else None,
            created_by=created_by,
            raters_per_item=raters_per_item,
            instructions=PAIRWISE_INSTRUCTIONS,
            extra_filters={"responder_a": responder_a, "responder_b": responder_b},
        )
        items = [_pair_item(campaign, a, b) for a, b in both]
        _seeded(f"pairwise:{campaign.pk}:{len(compared)}").shuffle(items)
        return CampaignItems(campaign, _insert(items))


def _pair_item(campaign: Campaign, a: EvaluationResponse, b: EvaluationResponse) -> Item:
    """The item comparing ``a`` and ``b`` (one context): which is shown first is a seeded coin flip
    per campaign and context. Its author is the human writer among the two, if any."""
    first = "a" if _seeded(f"pairwise:{campaign.pk}:{a.context_id}").random() < 0.5 else "b"
    shown_first, shown_second = (a, b) if first == "a" else (b, a)
    return Item(
        campaign=campaign,
        key=f"pair-{a.context_id}",
        author_id=a.turn.dialog.created_by_id or b.turn.dialog.created_by_id,
        context=_context_turns(a.context),
        response=shown_first.turn.text,
        evaluation_context_id=a.context_id,
        pair={"a": a.pk, "b": b.pk, "first": first, "second": shown_second.turn.text},
        open_slots=campaign.raters_per_item,
    )
