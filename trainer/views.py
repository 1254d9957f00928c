"""The evaluation report page (issue 15): one evaluation set, every model version evaluated on it
and the human baseline, for admins and researchers. Served beside the admin, in its look: the
chart, the metrics with their intervals, a pair of responders compared (``?a=&b=``), win rates,
the automatic metrics and how well they tracked the human ones. It only reads; the numbers come
from ``trainer.evaluation_report_loader``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from annotation.statistics import Interval
from dialogs.models import EvaluationSet
from groundwork.roles import permission_required
from trainer.evaluation_report import Report, report_chart
from trainer.evaluation_report_loader import (
    REPORT_PERMISSIONS,
    ReportInputs,
    evaluation_set_report,
    report_urls,
)

DISCRIMINATORS = ("SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE")
CELL_HTML = '<strong>{}</strong><br><span class="interval">[{}, {}]</span><br><span class="n">n = {}</span>'


def report_page_context(
    report: Report, inputs: ReportInputs, evaluation_set: EvaluationSet
) -> dict[str, Any]:
    """What the page shows of ``report``: rows with links to each version's page (its lineage:
    jobs, datasets, campaigns), comparisons, win rates, automatic metrics and correlations."""
    labels = {metric.key: metric.label for metric in report.metrics}
    rows = []
    for row in report.rows:
        evaluation = inputs.evaluations.get(row.responder)
        version = evaluation.model_version if evaluation else None
        rows.append(
            {
                "row": row,
                "cells": _cells_html([row.cells.get(metric.key) for metric in report.metrics]),
                "evaluation": evaluation,
                "lineage_url": (
                    reverse("admin:trainer_modelversion_change", args=[version.pk]) + "#lineage"
                    if version is not None
                    else ""
                ),
                "discriminators": [
                    _fixed(row.automatic.discriminators.get(name) if row.automatic else None)
                    for name in DISCRIMINATORS
                ],
            }
        )
    comparisons = [
        {
            "comparison": comparison,
            "lines": [
                {
                    "label": labels[key],
                    "a": _estimate(report, comparison.a, key),
                    "b": _estimate(report, comparison.b, key),
                    "difference": difference,
                    "signed": _signed(difference.estimate, difference.low, difference.high)
                    if difference
                    else None,
                }
                for key, difference in comparison.differences.items()
            ],
        }
        for comparison in report.comparisons
    ]
    chosen = report.comparisons[0] if len(report.comparisons) == 1 else None
    title = f"Evaluation report: {evaluation_set}"
    return {
        "title": title,
        "evaluation_set": evaluation_set,
        "report": report,
        "inputs": inputs,
        "rows": rows,
        "versions": [entry for entry in rows if not entry["row"].human],
        "comparisons": comparisons,
        "pair_a": chosen.a if chosen else "",
        "pair_b": chosen.b if chosen else "",
        "discriminator_names": DISCRIMINATORS,
        "correlations": [
            {"correlation": c, "spearman": _signed(c.spearman), "pearson": _signed(c.pearson)}
            for c in report.correlations
        ],
        "chart": mark_safe(report_chart(report, title)) if report.rows else "",  # noqa: S308 - escaped
        "urls": report_urls(evaluation_set),
        "set_url": reverse("admin:dialogs_evaluationset_change", args=[evaluation_set.pk]),
        "all_pairs_url": f"?{urlencode({'pairs': 'all'})}",
    }


def _fixed(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _cells_html(cells: list[Interval | None]) -> SafeString:
    """The table's cells of one row, built here: the template's filters cost more than the report
    on a large set (200 cells)."""
    return format_html_join(
        "",
        '<td class="number">{}</td>',
        (
            (
                format_html(
                    CELL_HTML,
                    _fixed(cell.estimate),
                    _fixed(cell.low),
                    _fixed(cell.high),
                    cell.n,
                )
                if cell is not None
                else "—",
            )
            for cell in cells
        ),
    )


def _signed(*values: float | None) -> list[str]:
    """Signed to 3 decimals (``+0.125``), "—" for None."""
    return ["—" if value is None else f"{value:+.3f}" for value in values]


def _estimate(report: Report, responder: str, key: str) -> float | None:
    for row in report.rows:
        if row.responder == responder:
            cell = row.cells.get(key)
            return cell.estimate if cell else None
    return None


@permission_required(REPORT_PERMISSIONS[0])
def evaluation_report_page(request: HttpRequest, set_id: int) -> HttpResponse:
    """The report of evaluation set ``set_id``; 403 without both ``REPORT_PERMISSIONS``."""
    if not request.user.has_perms(REPORT_PERMISSIONS):
        raise PermissionDenied("You do not have access to this page.")
    evaluation_set = get_object_or_404(EvaluationSet, pk=set_id)
    report, inputs = evaluation_set_report(evaluation_set, params=request.GET)
    context = report_page_context(report, inputs, evaluation_set)
    return TemplateResponse(
        request, "admin/trainer/evaluation_report.html", {**admin.site.each_context(request), **context}
    )
