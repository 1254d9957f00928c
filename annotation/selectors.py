"""Reads of the annotation engine used by more than one caller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import TYPE_CHECKING, Any

from django.db.models import Count, Exists, OuterRef, Prefetch, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from annotation import rules
from annotation.errors import ChatError, ChatNotFound
from annotation.models import (
    EVALUATION_RATING_KIND,
    Assignment,
    Campaign,
    Chat,
    ConsensusLabel,
    Item,
    RaterModelRun,
    Rewrite,
    TurnFlag,
    WorkerQuality,
    item_complete,
)
from annotation.questions import campaign_questions
from dialogs.models import Candidate, EvaluationResponse, EvaluationSet, Role, Turn
from toolset.models import Tool, ToolCall

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# Items left for a worker are counted up to this many: counting all of them read every open item
# of the campaign on each page (135 ms at 1M items); past it the counter says "1,000+".
LEFT_COUNTED_UP_TO = 1000


@dataclass(frozen=True)
class Left:
    """How many items are left for a worker, as far as they are counted."""

    count: int
    more: bool = False  # more than ``count`` are left

    def __str__(self) -> str:
        return f"{self.count:,}+" if self.more else f"{self.count:,}"


@dataclass(frozen=True)
class WorkerCampaign:
    campaign: Campaign
    left: Left  # items this worker could still be given
    blocked_reason: str = ""  # set when the worker is blocked from the campaign


def campaigns_for_worker(*, worker: User) -> list[WorkerCampaign]:
    """Open campaigns with how many items are left for this worker."""
    blocked = dict(
        WorkerQuality.objects.filter(worker=worker, blocked=True).values_list("campaign_id", "blocked_reason")
    )
    return [
        WorkerCampaign(
            campaign=campaign,
            left=left_for_worker(worker=worker, campaign=campaign),
            blocked_reason=blocked.get(campaign.pk, ""),
        )
        for campaign in Campaign.objects.filter(status=Campaign.Status.OPEN).order_by("created_at", "id")
    ]


def done_today(*, worker: User, campaign: Campaign | None = None) -> int:
    start = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    done = Assignment.objects.filter(worker=worker, state=Assignment.State.SUBMITTED, submitted_at__gte=start)
    if campaign is not None:
        done = done.filter(item__campaign=campaign)
    return done.count()


def left_for_worker(*, worker: User, campaign: Campaign, holding: bool = False) -> Left:
    """Items with a free slot that the worker has not seen and did not write, counted up to
    ``LEFT_COUNTED_UP_TO``; ``holding``: and the item the worker holds a lease on (seen, but not
    done)."""
    seen = Assignment.objects.filter(worker=worker).values("item_id")
    open_items = Item.objects.filter(campaign=campaign, kind=Item.Kind.NORMAL, open_slots__gt=0)
    # From the campaign's first open item on: without the bound PostgreSQL may walk the primary
    # key through the items of every campaign before this one (as annotation.hot_path explains).
    open_to_them = (
        open_items.filter(pk__gte=Subquery(open_items.order_by("pk").values("pk")[:1]))
        .exclude(author=worker)
        .exclude(pk__in=seen)
    )
    count = open_to_them[: LEFT_COUNTED_UP_TO + 1].count() + int(holding)
    if count > LEFT_COUNTED_UP_TO:
        return Left(LEFT_COUNTED_UP_TO, more=True)
    return Left(count)


def task_payload(assignment: Assignment) -> dict[str, Any]:
    """What a worker is shown for an assignment: the item and the questions, never others' answers.

    Every response is the "model"'s, whoever wrote it: nothing tells a rater of an evaluation set's
    campaigns which responder it was (the key is opaque too). A human baseline task has no response
    (the worker writes it: submit ``{"response": ...}``); a side-by-side task has ``responses``,
    Response 1 and Response 2 (submit ``{"choice": "1" | "2" | "tie"}``).
    """
    item = assignment.item
    campaign = item.campaign
    response: dict[str, str] | None = {"speaker": "model", "text": item.response}
    shown: dict[str, Any] = {}
    if campaign.kind == Campaign.Kind.HUMAN_RESPONSE:
        response = None
    elif campaign.kind == Campaign.Kind.PAIRWISE:
        response = None
        shown["responses"] = [
            {"label": "Response 1", "speaker": "model", "text": item.response},
            {"label": "Response 2", "speaker": "model", "text": pair_second(item)},
        ]
    return {
        "assignment_id": assignment.pk,
        "expires_at": assignment.expires_at.isoformat(),
        "campaign": {"id": campaign.pk, "name": campaign.name, "kind": campaign.kind},
        "item": {"key": item.key, "context": item.context, "response": response, **shown},
        "questions": [q.as_dict() for q in campaign_questions(campaign)],
        # Rewrite tasks: the toolset session whose search results may be cited.
        "research_session": research_session(assignment)
        if campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE
        else None,
    }


def evaluation_context_role(item: Item) -> Role | None:
    """The role of the context of an evaluation item (a role set's): a human writer answers as it."""
    return Role.objects.filter(evaluationcontext__items__pk=item.pk).first()


def pair_second(item: Item) -> str:
    """The text a side-by-side item shows as Response 2 (``Item.pair``; the hot path does not read
    that column, so it is read here when missing)."""
    if "pair" in item.get_deferred_fields():
        item.pair = Item.objects.values_list("pair", flat=True).get(pk=item.pk)
    return (item.pair or {}).get("second", "")


@dataclass(frozen=True)
class Completeness:
    """A campaign's normal items by completeness. An item is *complete* when its judgments reached
    the campaign's raters per item: only complete items have consensus labels (so only they give
    quality_safety examples). The others are *incomplete*: ``partly_rated`` of them have some
    judgments, the rest none."""

    total: int = 0
    complete: int = 0
    partly_rated: int = 0

    @property
    def incomplete(self) -> int:
        return self.total - self.complete


def _complete() -> Q:
    return item_complete()


def campaigns_completeness(*, campaigns: Sequence[Campaign]) -> dict[int, Completeness]:
    """``Completeness`` of each campaign's normal items, by campaign id, in one query."""
    found = {campaign.pk: Completeness() for campaign in campaigns}
    rows = (
        Item.objects.filter(campaign__in=list(found), kind=Item.Kind.NORMAL)
        .values("campaign_id")
        .annotate(
            total=Count("id"),
            complete=Count("id", filter=_complete()),
            partly_rated=Count("id", filter=~_complete() & Q(judgment_count__gt=0)),
        )
        .order_by()
    )
    for row in rows:
        found[row["campaign_id"]] = Completeness(row["total"], row["complete"], row["partly_rated"])
    return found


def campaigns_label_aggregations(*, campaigns: Sequence[Campaign]) -> dict[int, dict[str, Any]]:
    """Which aggregation made the labels datasets take from each campaign, by campaign id, for a
    dataset manifest: ``labels`` is always ``majority`` (``ConsensusLabel``, the paper's rules);
    ``dawid_skene_run`` is the campaign's latest finished Dawid–Skene run, whose soft labels the
    consensus export carries beside them (None when there is none). One query."""
    runs: dict[int, int] = {}
    for campaign_id, run_id in (
        RaterModelRun.objects.filter(campaign__in=campaigns, status=RaterModelRun.Status.DONE)
        .order_by("campaign_id", "-created_at", "-id")
        .values_list("campaign_id", "id")
    ):
        runs.setdefault(campaign_id, run_id)
    return {c.pk: {"labels": "majority", "dawid_skene_run": runs.get(c.pk)} for c in campaigns}


def campaign_progress(*, campaign: Campaign) -> dict[str, int | float]:
    """Normal items: total, complete (all raters judged, or decided: labelled), incomplete (not
    labelled), and of those how many are partly rated and not rated at all; the judgments
    (submitted assignments); and in a campaign that stops once the answer is decided, the items
    decided before their last rater (``decided``) and the judgments they were spared (``saved``:
    their raters per item less the judgments they got, a late one on a lease held when the item
    was decided included; ``planned``: the judgments every item would take, ``saved_share``: the
    saved ones in percent of those)."""
    counted = campaigns_completeness(campaigns=[campaign])[campaign.pk]
    decided = Item.objects.filter(
        campaign=campaign, kind=Item.Kind.NORMAL, decided_at_raters__lt=campaign.raters_per_item
    ).aggregate(items=Count("id"), judged=Sum("judgment_count"))
    saved = decided["items"] * campaign.raters_per_item - (decided["judged"] or 0)
    planned = counted.total * campaign.raters_per_item
    return {
        "decided": decided["items"],
        "saved": saved,
        "planned": planned,
        "saved_share": 100 * saved / planned if planned else 0.0,
        "total": counted.total,
        "complete": counted.complete,
        "incomplete": counted.incomplete,
        "partly_rated": counted.partly_rated,
        "not_rated": counted.incomplete - counted.partly_rated,
        "judgments": Assignment.objects.filter(
            item__campaign=campaign, state=Assignment.State.SUBMITTED
        ).count(),
    }


def turn_candidates(*, turn_id: int | None) -> list[Candidate]:
    """The sampled candidates of a model turn (none for imported items without a turn)."""
    return list(Candidate.objects.filter(turn_id=turn_id)) if turn_id else []


# --- research (rewrite tasks) -----------------------------------------------------------------

RESEARCH_SESSION_PREFIX = "assignment-"


def research_session(assignment: Assignment) -> str:
    """The toolset session of an assignment's research: its worker's searches there are what the
    rewrite may cite (``annotation.services.rewrites.research_session_check`` keeps everyone else out)."""
    return f"{RESEARCH_SESSION_PREFIX}{assignment.pk}"


def research_calls(assignment: Assignment) -> list[ToolCall]:
    """The searches the assignment's worker made in its research session, oldest first: what the
    rewrite page shows and what a submission may cite (anyone else's calls count for neither)."""
    return list(
        ToolCall.objects.filter(
            session=research_session(assignment), tool=Tool.SEARCH, actor_user_id=assignment.worker_id
        ).order_by("id")
    )


# --- what the trainer reads: consensus labels and researched rewrites ----------------------------


def labelled_items(*, campaigns: Sequence[Campaign]) -> QuerySet[Item]:
    """The complete normal items of ``campaigns`` that have consensus labels, by id, each with its
    campaign, turn and dialog (none for imported items) and its labels. Incomplete items are left
    out even if labels of theirs remain from an older rules version.

    "Has labels" is an ``EXISTS``, not a join and ``DISTINCT``: the trainer reads this a batch at a
    time (``trainer.sources._in_batches``), and a DISTINCT over the wide rows sorted every item
    left at every batch (quadratic: 8 s a batch at 80,000 items), where the EXISTS lets the
    database walk the primary key and stop at the batch's end."""
    return (
        Item.objects.filter(campaign__in=campaigns, kind=Item.Kind.NORMAL)
        .filter(Exists(ConsensusLabel.objects.filter(item_id=OuterRef("pk"))))
        .filter(_complete())
        .select_related("turn__dialog", "campaign")
        .prefetch_related("labels")
        .order_by("pk")
    )


def unsafe_items(*, campaigns: Sequence[Campaign]) -> QuerySet[Item]:
    """The complete items of the safety campaigns among ``campaigns`` whose consensus says unsafe, by id."""
    return (
        Item.objects.filter(
            campaign__in=[c for c in campaigns if c.kind == Campaign.Kind.SAFETY],
            labels__attribute=rules.UNSAFE,
            labels__label=1,
        )
        .filter(_complete())
        .order_by("pk")
    )


def rewritten_items(*, campaigns: Sequence[Campaign]) -> QuerySet[Item]:
    """The normal items of ``campaigns`` that some rater answered (a ``Rewrite``), by id, each with
    its campaign, turn and dialog, its consensus labels, its turn's sampled candidates, and
    ``answered``: its assignments that have a rewrite (with it), oldest first. An ``EXISTS``, not a
    join and ``DISTINCT``, as ``labelled_items``."""
    answered = Assignment.objects.filter(rewrite__isnull=False).select_related("rewrite").order_by("pk")
    return (
        Item.objects.filter(campaign__in=campaigns, kind=Item.Kind.NORMAL)
        .filter(Exists(Rewrite.objects.filter(assignment__item_id=OuterRef("pk"))))
        .select_related("turn__dialog", "campaign")
        .prefetch_related(
            "labels", "turn__candidates", Prefetch("assignments", queryset=answered, to_attr="answered")
        )
        .order_by("pk")
    )


def rewrite_searches(rewrite: Rewrite) -> list[ToolCall]:
    """The searches of a rewrite's research (its tool calls), in the order they were made."""
    calls = ToolCall.objects.filter(pk__in=rewrite.tool_call_ids, tool=Tool.SEARCH)
    return list(calls.order_by("created_at", "pk"))


# --- chats: who may see one, what it shows ----------------------------------------------------


def chat_for_worker(*, worker: User, chat_id: int) -> Chat:
    """The worker's own chat; ``ChatNotFound`` for a missing chat and for another worker's."""
    chat = Chat.objects.select_related("dialog", "role").filter(pk=chat_id, worker=worker).first()
    if chat is None:
        raise ChatNotFound("There is no such chat of yours.")
    return chat


def chat_turns(*, chat: Chat) -> list[Turn]:
    """The chat's turns in order, each with ``own_flags``: the chat's worker's flag, if any."""
    own = TurnFlag.objects.filter(worker_id=chat.worker_id)
    return list(
        Turn.objects.filter(dialog_id=chat.dialog_id)
        .order_by("index")
        .prefetch_related(Prefetch("flags", queryset=own, to_attr="own_flags"))
    )


def open_chats(*, worker: User) -> QuerySet[Chat]:
    return Chat.objects.filter(worker=worker, status=Chat.Status.OPEN).select_related("role")


def active_roles() -> QuerySet[Role]:
    return Role.objects.filter(active=True)


def role_by_slug(slug: str) -> Role:
    role = Role.objects.filter(slug=slug).first()
    if role is None:
        raise ChatError(f"Role: there is no role {slug!r}.")
    return role


# --- evaluation sets: who answered, and what the crowd said (the evaluation report reads these) --

EVALUATION_RATING_KINDS = tuple(dict.fromkeys(EVALUATION_RATING_KIND.values()))


def evaluation_responders(*, evaluation_set: EvaluationSet) -> dict[str, int]:
    """Who answered the set (model version names, ``HUMAN_RESPONDER``), each with how many of its
    contexts, by name."""
    rows = (
        EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set)
        .values_list("responder")
        .annotate(n=Count("id"))
        .order_by("responder")
    )
    return dict(rows)


def evaluation_labels(
    *, evaluation_set: EvaluationSet, responses_by_turn: Mapping[int, int] | None = None
) -> dict[int, dict[str, int]]:
    """Response id → {attribute: 0/1} from the consensus labels of the response's complete items
    in the set's blind rating campaigns, whatever their kind: SSI's ``sensible``/``specific``/
    ``interesting``, safety's ``safety`` and ``unsafe`` (and one per objective: 1 = violates),
    the groundedness evaluation's attributes, helpfulness's ``helpful``/``role_consistent``.

    Complete items only (all raters answered: an incomplete item has no labels), so a response
    rated in no complete item is absent. Three queries, whatever the size of the set: the set's
    campaigns, its responses by turn (``responses_by_turn``, turn id → response id, when the caller
    has read them already), then the labels of those campaigns' items. Naming the
    campaigns by id lets PostgreSQL count their items from its statistics; joined to the set
    instead, beside a large campaign it took them for a fifth of all items and scanned every item
    (1.1 s rather than 0.1 s for 60,000 labels beside 1.2M items, ``make bench``'s report part).
    """
    campaigns = list(
        Campaign.objects.filter(evaluation_set=evaluation_set, kind__in=EVALUATION_RATING_KINDS).values_list(
            "pk", flat=True
        )
    )
    if not campaigns:
        return {}
    responses = responses_by_turn
    if responses is None:
        responses = dict(
            EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set).values_list(
                "turn_id", "pk"
            )
        )
    rows = ConsensusLabel.objects.filter(
        item_complete("item__", "item__campaign__raters_per_item"),
        item__campaign_id__in=campaigns,
        item__kind=Item.Kind.NORMAL,
        item__turn__isnull=False,
    ).values_list("item__turn_id", "attribute", "label")
    labels: dict[int, dict[str, int]] = {}
    for turn_id, attribute, label in rows:
        response_id = responses.get(turn_id)
        if response_id is not None:
            labels.setdefault(response_id, {})[attribute] = label
    return labels


def pairwise_outcomes(*, evaluation_set: EvaluationSet) -> list[tuple[str, str, int, str]]:
    """(responder_a, responder_b, context id, outcome) for every complete item of the set's
    side-by-side campaigns, outcome "a", "b" or "tie" (the majority of the item's raters; a tie
    when there is none: ``rules.pairwise_outcome``). a and b are the campaign's responders, mapped
    back from the order each rater saw the responses in. Ordered by campaign, then context.
    Two queries, whatever the size of the set.
    """
    campaigns = {
        pk: (filters.get("responder_a"), filters.get("responder_b"))
        for pk, filters in Campaign.objects.filter(
            evaluation_set=evaluation_set, kind=Campaign.Kind.PAIRWISE
        ).values_list("pk", "filters")
    }
    rows = (
        ConsensusLabel.objects.filter(
            item_complete("item__", "item__campaign__raters_per_item"),
            item__campaign__in=list(campaigns),
            item__kind=Item.Kind.NORMAL,
            attribute__in=[rules.A_BETTER, rules.B_BETTER],
        )
        .values_list(
            "item__campaign_id",
            "item__evaluation_context__index",
            "item__evaluation_context_id",
            "attribute",
            "label",
        )
        .order_by("item__campaign_id", "item__evaluation_context__index")
    )
    found: dict[tuple[int, int, int], dict[str, int]] = {}
    for campaign_id, index, context_id, attribute, label in rows:
        found.setdefault((campaign_id, index, context_id), {})[attribute] = label
    outcomes: list[tuple[str, str, int, str]] = []
    for (campaign_id, _, context_id), labels in found.items():
        responder_a, responder_b = campaigns[campaign_id]
        outcomes.append((responder_a, responder_b, context_id, rules.pairwise_outcome_from_labels(labels)))
    return outcomes
