"""The evaluation report's inputs, read from the database: a thin layer over the pure core
(``trainer.evaluation_report``), shared by the report page and the API.

What it reads, in a few queries whatever the set's size: the set's contexts (in index order),
its responses (``dialogs.EvaluationResponse``: responder and context), the consensus labels of
every response's rated items and the side-by-side outcomes (``annotation.selectors
.evaluation_labels`` and ``pairwise_outcomes``), and the set's ``trainer.Evaluation`` rows with
their model versions (the automatic metrics, the rows' order: oldest version first, the human
baseline last). The set's bootstrap resamples are kept in this process (``RESAMPLES_KEPT`` sets):
a set's contexts never change, so the same draws serve every report of it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.urls import reverse

from annotation import selectors as annotation_selectors
from annotation.statistics import ContextResamples
from dialogs.models import HUMAN_RESPONDER, EvaluationContext, EvaluationResponse, EvaluationSet
from groundwork.parsers import ParameterError, query_text
from trainer.evaluation_report import Report, all_pairs, default_pair, evaluation_report, response_values
from trainer.models import Evaluation

RESAMPLES_KEPT = 8
# Reading a report needs both: the set's contexts and the model versions (admins and researchers).
REPORT_PERMISSIONS = ("dialogs.view_evaluationset", "trainer.view_modelversion")

Outcome = tuple[str, str, Hashable, str]


@dataclass(frozen=True)
class ReportInputs:
    """What the core needs, and the rows the page links to."""

    contexts: tuple[int, ...]  # EvaluationContext ids, in the set's order
    values: dict[str, dict[int, dict[str, float | None]]]  # responder -> context -> metric -> value
    responders: list[str]  # the rows, in order
    automatic: dict[str, dict[str, Any]]  # model version name -> Evaluation.metrics
    outcomes: list[Outcome]
    evaluations: dict[str, Evaluation]  # model version name -> its evaluation, with the version
    responses: int  # answers stored, rated or not


def report_inputs(
    evaluation_set: EvaluationSet,
    *,
    labels: Mapping[int, Mapping[str, int]] | None = None,
    outcomes: Sequence[Outcome] | None = None,
) -> ReportInputs:
    """The report's inputs for ``evaluation_set``. ``labels`` (response id -> attribute -> 0/1) and
    ``outcomes`` default to ``annotation.selectors.evaluation_labels`` and ``pairwise_outcomes``;
    a set nobody has answered has neither, and they are not asked for. A label the rules cannot
    read is a ``ValueError`` naming the response."""
    contexts = tuple(
        EvaluationContext.objects.filter(evaluation_set=evaluation_set)
        .order_by("index")
        .values_list("pk", flat=True)
    )
    responses = list(
        EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set)
        .order_by()
        .values_list("pk", "context_id", "responder", "turn_id")
    )
    if responses:
        if labels is None:
            labels = annotation_selectors.evaluation_labels(
                evaluation_set=evaluation_set, responses_by_turn={turn: pk for pk, _, _, turn in responses}
            )
        if outcomes is None:
            outcomes = annotation_selectors.pairwise_outcomes(evaluation_set=evaluation_set)
    values: dict[str, dict[int, dict[str, float | None]]] = {}
    for pk, context, responder, _ in responses:
        answered = values.setdefault(responder, {})
        found = (labels or {}).get(pk)
        if found:
            try:
                answered[context] = response_values(found)
            except ValueError as exc:
                raise ValueError(f"evaluation response {pk} ({responder}): {exc}") from None
    evaluations = {
        evaluation.model_version.name: evaluation
        for evaluation in Evaluation.objects.filter(evaluation_set=evaluation_set)
        .select_related("model_version")
        .order_by("model_version__created_at", "model_version_id")
    }
    responders = list(evaluations)
    responders += sorted(set(values) - set(responders) - {HUMAN_RESPONDER})  # answers without a row
    if HUMAN_RESPONDER in values:
        responders.append(HUMAN_RESPONDER)
    return ReportInputs(
        contexts=contexts,
        values=values,
        responders=responders,
        automatic={name: evaluation.metrics for name, evaluation in evaluations.items()},
        outcomes=list(outcomes or []),
        evaluations=evaluations,
        responses=len(responses),
    )


def report_urls(evaluation_set: EvaluationSet) -> dict[str, str]:
    page = reverse("evaluation-report", args=[evaluation_set.pk])
    api = reverse("api:evaluation-set-report", kwargs={"pk": evaluation_set.pk})
    return {"page": page, "json": api, "csv": f"{api}?format=csv"}


@lru_cache(maxsize=RESAMPLES_KEPT)
def set_resamples(contexts: tuple[int, ...]) -> ContextResamples:
    """The bootstrap resamples of a set's contexts (default count and seed), drawn once per process."""
    return ContextResamples(contexts)


def chosen_pairs(params: Mapping[str, str], responders: Sequence[str]) -> list[tuple[str, str]]:
    """The comparisons a request asks for: ``?a=&b=`` (two responders), ``?pairs=all`` (every
    pair), or the default pair (``default_pair``); ``ParameterError`` (400) for a name that is
    not one of the report's responders, or ``a`` without ``b``."""
    if query_text(params, "pairs", choices=["all"]):
        return all_pairs(responders)
    a, b = (query_text(params, name, choices=responders) for name in ("a", "b"))
    if a or b:
        if not (a and b):
            raise ParameterError("b" if a else "a", "choose both responders of the pair")
        return [(a, b)]
    pair = default_pair(responders, human=HUMAN_RESPONDER)
    return [pair] if pair else []


def evaluation_set_report(
    evaluation_set: EvaluationSet,
    *,
    params: Mapping[str, str] | None = None,
    labels: Mapping[int, Mapping[str, int]] | None = None,
    outcomes: Sequence[Outcome] | None = None,
) -> tuple[Report, ReportInputs]:
    """The report of ``evaluation_set`` with the comparisons ``params`` choose (``chosen_pairs``),
    and the inputs it was made of."""
    inputs = report_inputs(evaluation_set, labels=labels, outcomes=outcomes)
    report = evaluation_report(
        contexts=inputs.contexts,
        values=inputs.values,
        responders=inputs.responders,
        human=HUMAN_RESPONDER,
        automatic=inputs.automatic,
        outcomes=inputs.outcomes,
        pairs=chosen_pairs(params or {}, inputs.responders),
        resampled=set_resamples(inputs.contexts),
    )
    return report, inputs
