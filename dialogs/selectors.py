"""Reads of the dialogs app used by more than one caller."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, F, Func, IntegerField, Prefetch, Q, QuerySet, Subquery

from dialogs.models import Dialog, DialogExport, EvaluationContext, EvaluationSet, Turn


def dialog_list(*, purpose: str | None = None, source: str | None = None) -> QuerySet[Dialog]:
    # Explicit order: Meta.ordering is not applied to GROUP BY queries.
    dialogs = (
        Dialog.objects.select_related("role")
        .annotate(turn_count=Count("turns"))
        .order_by("-created_at", "-id")
    )
    if purpose:
        dialogs = dialogs.filter(purpose=purpose)
    if source:
        dialogs = dialogs.filter(source=source)
    return dialogs


def dialog_with_turns(*, external_id: str) -> Dialog:
    return Dialog.objects.select_related("role").prefetch_related("turns").get(external_id=external_id)


def dialog_export_list() -> QuerySet[DialogExport]:
    return DialogExport.objects.select_related("requested_by")


def turn_count(*conditions: Q, **filters: Any) -> Subquery:
    """The number of turns matching ``conditions`` and ``filters`` (which may hold ``OuterRef``s),
    as an expression to annotate rows with: one subquery per row, no GROUP BY on the outer query
    (e.g. a model version's fallback replies: ``turn_count(model_version=OuterRef("name"),
    fallback="unsafe")``)."""
    turns = Turn.objects.filter(*conditions, **filters).order_by()
    return Subquery(
        turns.annotate(n=Func(F("pk"), function="COUNT")).values("n"), output_field=IntegerField()
    )


def evaluation_set_list(*, name: str | None = None) -> QuerySet[EvaluationSet]:
    """Evaluation sets by name, newest version first."""
    sets = EvaluationSet.objects.select_related("created_by").order_by("name", "-version")
    return sets.filter(name=name) if name else sets


def evaluation_set_with_contexts() -> QuerySet[EvaluationSet]:
    """Evaluation sets with their contexts (in the set's order) and the contexts' roles."""
    contexts = EvaluationContext.objects.select_related("role", "source_dialog").order_by("index")
    return evaluation_set_list().prefetch_related(Prefetch("contexts", queryset=contexts))
