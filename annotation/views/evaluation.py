"""An evaluation set's crowd tasks: writing the next turn of a context (the human baseline,
``annotation/write.html``) and choosing the better of two responses (side by side,
``annotation/compare.html``).

Both pages are plain forms: a submit answers with a 303 to the page, which shows the next item and
"Saved."; a refusal shows the page again with the message and what the worker wrote or chose. A
skip goes through the rating page's skip, which comes back here (``common.work_url``). Nothing on
either page says who wrote a response: responses are shown as "Response", "Response 1" and
"Response 2".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors
from annotation.models import Campaign, Item
from annotation.services import evaluation_tasks
from annotation.views.common import context_turns, current_work, own_campaign, see_other
from groundwork.errors import DomainError
from groundwork.http_errors import refusal_status, shows_refusals
from groundwork.roles import Role, role_required

WRITE_TEMPLATE = "annotation/write.html"
COMPARE_TEMPLATE = "annotation/compare.html"
SAVED = "Saved. Here is your next item."


def _write_refused(request: HttpRequest, error: DomainError, *, assignment_id: int) -> HttpResponse:
    """The page again with the message and the worker's text (the same item while they hold it)."""
    status = refusal_status(request, error)
    campaign = own_campaign(request, assignment_id)
    if campaign is None:
        return render(request, WRITE_TEMPLATE, {"campaign": None, "error": error.message}, status=status)
    return _write_response(
        request,
        campaign=campaign,
        error=error.message,
        text=request.POST.get("response", ""),
        answered_assignment_id=assignment_id,
        status=status,
    )


def _compare_refused(request: HttpRequest, error: DomainError, *, assignment_id: int) -> HttpResponse:
    status = refusal_status(request, error)
    campaign = own_campaign(request, assignment_id)
    if campaign is None:
        return render(request, COMPARE_TEMPLATE, {"campaign": None, "error": error.message}, status=status)
    return _compare_response(
        request,
        campaign=campaign,
        error=error.message,
        choice=request.POST.get("choice", ""),
        answered_assignment_id=assignment_id,
        status=status,
    )


@role_required(Role.CROWDWORKER)
@require_safe
def write(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The worker's current context of a human baseline campaign, with a box for the next turn."""
    return _write_response(request, campaign=get_object_or_404(Campaign, pk=campaign_id))


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_write_refused)
def write_submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    result = evaluation_tasks.human_response_submit(
        assignment_id=assignment_id, worker=request.user, text=request.POST.get("response", "")
    )
    return see_other(reverse("work-write", args=[result.assignment.item.campaign.pk]) + "?done=saved")


@role_required(Role.CROWDWORKER)
@require_safe
def compare(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The worker's current pair of responses of a side-by-side campaign."""
    return _compare_response(request, campaign=get_object_or_404(Campaign, pk=campaign_id))


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_compare_refused)
def compare_submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    result = evaluation_tasks.pairwise_submit(
        assignment_id=assignment_id, worker=request.user, choice=request.POST.get("choice", "")
    )
    return see_other(reverse("work-compare", args=[result.assignment.item.campaign.pk]) + "?done=saved")


# --- helpers --------------------------------------------------------------------------------


def _page(
    request: HttpRequest,
    *,
    campaign: Campaign,
    kind: str,
    error: str,
) -> tuple[dict[str, Any], Item | None]:
    """What both pages show: the campaign, the worker's lease (only in a campaign of ``kind``),
    the counters and the messages; and the leased item, if any."""
    here = campaign.kind == kind
    work = current_work(request, campaign, lease=here)
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": work.assignment,
        "blocked_reason": work.blocked_reason,
        "worked_here": here,
        "error": error,
        "notice": SAVED if request.GET.get("done") == "saved" and not error else "",
        **work.counters,
    }
    item = work.assignment.item if work.assignment is not None else None
    if item is not None:
        context["turns"] = context_turns(item.context)
    return context, item


def _write_response(
    request: HttpRequest,
    *,
    campaign: Campaign,
    error: str = "",
    text: str = "",
    answered_assignment_id: int | None = None,
    status: int = 200,
) -> HttpResponse:
    context, item = _page(request, campaign=campaign, kind=Campaign.Kind.HUMAN_RESPONSE, error=error)
    if item is not None:
        same_item = answered_assignment_id == context["assignment"].pk
        context.update(
            item=item,
            text=text if same_item else "",
            role=selectors.evaluation_context_role(item),
            max_chars=settings.TURN_MAX_CHARS,
        )
    return render(request, WRITE_TEMPLATE, context, status=status)


def _compare_response(
    request: HttpRequest,
    *,
    campaign: Campaign,
    error: str = "",
    choice: str = "",
    answered_assignment_id: int | None = None,
    status: int = 200,
) -> HttpResponse:
    context, item = _page(request, campaign=campaign, kind=Campaign.Kind.PAIRWISE, error=error)
    if item is not None:
        same_item = answered_assignment_id == context["assignment"].pk
        context.update(
            item=item,
            second=selectors.pair_second(item),
            choice=choice if same_item else "",
            choices=(("1", "Response 1"), ("2", "Response 2"), ("tie", "About the same")),
        )
    return render(request, COMPARE_TEMPLATE, context, status=status)
