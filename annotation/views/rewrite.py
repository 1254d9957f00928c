"""The grounded rewrite task (METHOD.md §4): the worker's current item of a rewrite campaign, the
research panel (their searches in the assignment's session, with a "Cite" button), and the answer
with its rewrite. One page, ``annotation/rewrite.html``; htmx swaps its ``research`` partial after
a search.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors
from annotation.models import Assignment, Campaign
from annotation.services import rewrites
from annotation.views.common import context_turns, current_work, own_campaign, see_other
from groundwork.errors import DomainError
from groundwork.http_errors import refusal_status, shows_refusals
from groundwork.roles import Role, role_required
from toolset.services import ToolsetQueryError

REWRITE_TEMPLATE = "annotation/rewrite.html"
_ANSWERS = {"yes": True, "no": False}


def _refused(request: HttpRequest, error: DomainError, *, assignment_id: int) -> HttpResponse:
    """The page again with the message and the worker's answers (another worker's assignment
    names no campaign). An htmx request gets 200 (htmx swaps no 4xx answer)."""
    status = refusal_status(request, error)
    campaign = own_campaign(request, assignment_id)
    if campaign is None:
        return render(request, REWRITE_TEMPLATE, {"campaign": None, "error": error.message}, status=status)
    return _rewrite_response(
        request,
        campaign=campaign,
        error=error.message,
        posted=_posted(request),
        answered_assignment_id=assignment_id,
        status=status,
    )


def _search_refused(request: HttpRequest, error: DomainError, *, assignment_id: int) -> HttpResponse:
    """A query the toolset cannot run is said in the research panel (htmx) or on the page with
    the query kept (400); anything else is refused as a submission is."""
    if not isinstance(error, ToolsetQueryError):
        return _refused(request, error, assignment_id=assignment_id)
    assignment = Assignment.objects.select_related("item__campaign").get(pk=assignment_id)
    message = f"Search: {error.message}"
    if request.htmx:
        return _research_panel(request, assignment, error=message)
    return _rewrite_response(
        request,
        campaign=assignment.item.campaign,
        research_error=message,
        query=request.POST.get("query", ""),
        status=error.status,
    )


@role_required(Role.CROWDWORKER)
@require_safe
def rewrite(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The worker's current item of a rewrite campaign, with the research done on it so far."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    return _rewrite_response(request, campaign=campaign)


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_search_refused)
def rewrite_research(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Search for the assignment; htmx gets the research results, a plain form the page again."""
    rewrites.rewrite_research(
        assignment_id=assignment_id, worker=request.user, query=request.POST.get("query", "")
    )
    assignment = Assignment.objects.select_related("item__campaign").get(pk=assignment_id)
    if request.htmx:
        return _research_panel(request, assignment)
    return see_other(reverse("work-rewrite", args=[assignment.item.campaign.pk]))


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_refused)
def rewrite_submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    posted = _posted(request)
    candidate_labels = {
        key.removeprefix("candidate-"): value
        for key, value in request.POST.items()
        if key.startswith("candidate-") and value
    }
    result = rewrites.rewrite_submit(
        assignment_id=assignment_id,
        worker=request.user,
        claims_external=_ANSWERS.get(posted["claims_external"]),  # type: ignore[arg-type]
        common_knowledge=_ANSWERS.get(posted["common_knowledge"]),
        rewrite=posted["rewrite"],
        candidate_labels=candidate_labels,
    )
    return see_other(reverse("work-rewrite", args=[result.assignment.item.campaign.pk]) + "?done=saved")


# --- helpers --------------------------------------------------------------------------------


def _posted(request: HttpRequest) -> dict[str, str]:
    """The answers of the form, kept when the page comes back with a message."""
    return {name: request.POST.get(name, "") for name in ("claims_external", "common_knowledge", "rewrite")}


def _research(assignment: Assignment) -> list[dict[str, Any]]:
    """The worker's searches of the assignment's session, newest first, each with the results it
    showed: the ones a submission may cite."""
    calls = reversed(selectors.research_calls(assignment))
    return [{"query": call.query, "results": call.results, "rank": call.rank} for call in calls]


def _research_panel(request: HttpRequest, assignment: Assignment, *, error: str = "") -> HttpResponse:
    context = {"assignment": assignment, "research": _research(assignment), "research_error": error}
    return render(request, f"{REWRITE_TEMPLATE}#research", context)


def _rewrite_response(
    request: HttpRequest,
    *,
    campaign: Campaign,
    error: str = "",
    research_error: str = "",
    query: str = "",
    posted: dict[str, str] | None = None,
    answered_assignment_id: int | None = None,
    status: int = 200,
) -> HttpResponse:
    is_rewrite = campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE
    work = current_work(request, campaign, lease=is_rewrite)
    assignment = work.assignment
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": assignment,
        "blocked_reason": work.blocked_reason,
        "is_rewrite": is_rewrite,
        "error": error,
        "research_error": research_error,
        "query": query,
        "notice": "Saved. Here is your next item." if request.GET.get("done") == "saved" else "",
        **work.counters,
    }
    if assignment is not None:
        item = assignment.item
        kept = posted if posted is not None and answered_assignment_id == assignment.pk else {}
        context.update(
            item=item,
            turns=context_turns(item.context),
            research=_research(assignment),
            claims_external=kept.get("claims_external", ""),
            common_knowledge=kept.get("common_knowledge", ""),
            rewrite_text=kept.get("rewrite") or item.response,
            rewrite_max_chars=settings.TURN_MAX_CHARS,
            candidates=selectors.turn_candidates(turn_id=item.turn_id),
        )
    return render(request, REWRITE_TEMPLATE, context, status=status)
