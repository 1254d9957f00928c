"""Campaigns: creating one from the dialogs a filter picks, and adding dialogs' model turns to it
as items.

A model turn is credited to the model version that wrote it (``Turn.model_version``): a campaign
filtered by model version takes that version's turns only, even from dialogs other versions
answered in too. A turn that is a canned fallback reply (``Turn.fallback``: every candidate was
predicted unsafe) is not the model's text, so a campaign leaves it out unless created with
``include_fallback``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from annotation.errors import AnnotationError
from annotation.models import Campaign, Item, SafetyObjective
from annotation.questions import DEFAULT_RATERS
from annotation.services.consensus import DECIDABLE_KINDS
from dialogs.models import Dialog, EvaluationSet, Role, Speaker, Turn

if TYPE_CHECKING:
    from django.contrib.auth.models import User

BATCH_SIZE = 2000
# Kinds whose items are an evaluation set's contexts, not dialogs' turns: made by
# annotation.services.evaluations (human_baseline_start, pairwise_campaign_create).
EVALUATION_ONLY_KINDS = (Campaign.Kind.HUMAN_RESPONSE, Campaign.Kind.PAIRWISE)


@dataclass(frozen=True)
class DialogFilters:
    purpose: str | None = None
    role: str | None = None  # role slug
    model_version: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    # Fallback replies (Turn.fallback) become items too; by default they are left out.
    include_fallback: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "purpose": self.purpose,
            "role": self.role,
            "model_version": self.model_version,
            "created_from": self.created_from.isoformat() if self.created_from else None,
            "created_to": self.created_to.isoformat() if self.created_to else None,
            "include_fallback": self.include_fallback,
        }


@transaction.atomic
def campaign_create(
    *,
    name: str,
    kind: str,
    filters: DialogFilters | None = None,
    raters_per_item: int | None = None,
    objectives: Sequence[str] | None = None,
    instructions: str = "",
    empty: bool = False,
    created_by: User | None = None,
    evaluation_set: EvaluationSet | None = None,
    stop_when_decided: bool = False,
) -> Campaign:
    """A campaign whose items are the model turns of the dialogs matching ``filters``: with a model
    version, only the turns that version wrote; fallback replies only with ``include_fallback``.

    Safety campaigns rate the objectives named in ``objectives`` (slugs; default: every active
    one). With ``empty`` the campaign gets no items (to import judgments into, say).
    With ``evaluation_set`` the campaign is one of that set's (``annotation.services.evaluations``
    makes them, empty, and adds their items); the human baseline and side-by-side kinds exist only so.
    With ``stop_when_decided`` (off by default: the paper asks every rater) an item stops getting
    raters once no remaining rater can change its labels (``annotation.decided``);
    for the kinds labelled by majority only (``consensus.DECIDABLE_KINDS``).
    """
    if Campaign.objects.filter(name=name).exists():
        raise AnnotationError(f"A campaign named {name!r} already exists.")
    if kind not in Campaign.Kind.values:
        raise AnnotationError(f"Unknown campaign kind {kind!r} (one of {', '.join(Campaign.Kind.values)}).")
    if kind in EVALUATION_ONLY_KINDS and evaluation_set is None:
        raise AnnotationError(
            f"{Campaign.Kind(kind).label} campaigns are made from an evaluation set, on its page "
            "(Campaigns → Evaluation sets), not from dialogs."
        )
    raters = DEFAULT_RATERS[Campaign.Kind(kind)] if raters_per_item is None else raters_per_item
    if raters < 1:
        raise AnnotationError("Raters per item must be at least 1.")
    if stop_when_decided and kind not in DECIDABLE_KINDS:
        raise AnnotationError(
            f"{Campaign.Kind(kind).label} campaigns ask every rater: stopping once the answer is decided "
            f"is for {Campaign.kinds_in_words(DECIDABLE_KINDS)} campaigns."
        )
    if objectives and kind != Campaign.Kind.SAFETY:
        raise AnnotationError("Objectives are for safety campaigns only.")
    filters = filters or DialogFilters()
    if filters.purpose and filters.purpose not in Dialog.Purpose.values:
        raise AnnotationError(
            f"Unknown dialog purpose {filters.purpose!r} (one of {', '.join(Dialog.Purpose.values)})."
        )
    if filters.role and not Role.objects.filter(slug=filters.role).exists():
        raise AnnotationError(f"There is no role with the slug {filters.role!r}.")
    campaign = Campaign.objects.create(
        name=name,
        kind=kind,
        raters_per_item=raters,
        instructions=instructions,
        filters=filters.as_json(),
        created_by=created_by,
        evaluation_set=evaluation_set,
        stop_when_decided=stop_when_decided,
    )
    if kind == Campaign.Kind.SAFETY:
        campaign.objectives.set(_objectives(objectives))
    if not empty:
        campaign_add_dialogs(campaign=campaign, dialogs=_filtered_dialogs(filters))
    return campaign


def _objectives(slugs: Sequence[str] | None) -> list[SafetyObjective]:
    if not slugs:
        chosen = list(SafetyObjective.objects.filter(active=True))
        if not chosen:
            raise AnnotationError("There is no active safety objective to rate.")
        return chosen
    found = {o.slug: o for o in SafetyObjective.objects.filter(slug__in=slugs)}
    missing = [slug for slug in slugs if slug not in found]
    if missing:
        raise AnnotationError(f"Unknown safety objective(s): {', '.join(missing)}.")
    return [found[slug] for slug in slugs]


def _filtered_dialogs(filters: DialogFilters) -> QuerySet[Dialog]:
    dialogs = Dialog.objects.all()
    if filters.purpose:
        dialogs = dialogs.filter(purpose=filters.purpose)
    if filters.role:
        dialogs = dialogs.filter(role__slug=filters.role)
    if filters.model_version:
        written = Turn.objects.filter(dialog=OuterRef("pk"), model_version=filters.model_version)
        dialogs = dialogs.filter(Exists(written))
    if filters.created_from:
        dialogs = dialogs.filter(created_at__gte=filters.created_from)
    if filters.created_to:
        dialogs = dialogs.filter(created_at__lt=filters.created_to)
    return dialogs


def _takes(campaign: Campaign, turn: Turn) -> bool:
    """Whether ``turn`` is one the campaign rates: a model turn, written by the campaign's model
    version when its filters name one, and not a fallback reply unless the campaign includes them."""
    filters = campaign.filters or {}
    model_version = filters.get("model_version")
    return (
        turn.speaker == Speaker.MODEL
        and (not model_version or turn.model_version == model_version)
        and (not turn.fallback or bool(filters.get("include_fallback")))
    )


def campaign_add_dialogs(*, campaign: Campaign, dialogs: QuerySet[Dialog]) -> int:
    """Add every model turn of ``dialogs`` that the campaign takes (``_takes``: its model
    version's, no fallback replies unless it includes them) as an item, with every turn before it
    as context.

    Turns already in the campaign are left alone. Returns the number of items added.
    """
    before = Item.objects.filter(campaign=campaign).count()
    batch: list[Item] = []
    for dialog in dialogs.prefetch_related("turns").order_by("id").iterator(chunk_size=500):
        context: list[dict[str, str]] = []
        for turn in dialog.turns.all():
            if _takes(campaign, turn):
                batch.append(
                    Item(
                        campaign=campaign,
                        key=f"{dialog.external_id}#{turn.index}",
                        turn=turn,
                        author_id=dialog.created_by_id,
                        context=list(context),
                        response=turn.text,
                        open_slots=campaign.raters_per_item,
                    )
                )
            context.append({"speaker": turn.speaker, "text": turn.text})
        if len(batch) >= BATCH_SIZE:
            Item.objects.bulk_create(batch, ignore_conflicts=True)
            batch = []
    Item.objects.bulk_create(batch, ignore_conflicts=True)
    return Item.objects.filter(campaign=campaign).count() - before
