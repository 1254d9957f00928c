"""Crowdworker pages: the campaigns open to a worker, and rating the items of one campaign.

One page, ``annotation/rate.html``; its ``task`` partial (the item, the questions and the counter)
is what htmx swaps after a submit or a skip. Every form is a real form, so the page works
without JavaScript: the views then answer with a 303 to the rating page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors, services
from annotation.models import Assignment, Campaign, Judgment
from annotation.questions import Question, campaign_questions
from dialogs.models import Speaker
from groundwork.roles import Role, role_required
from toolset.models import ToolCall
from toolset.services import ToolsetQueryError

RATE_TEMPLATE = "annotation/rate.html"


@dataclass(frozen=True)
class Choice:
    value: str
    label: str
    checked: bool


@dataclass(frozen=True)
class QuestionRow:
    """A question as the form shows it, with the worker's answer when the form comes back."""

    question: Question
    choices: tuple[Choice, ...]


@role_required(Role.CROWDWORKER)
@require_safe
def work_home(request: HttpRequest) -> HttpResponse:
    """The crowdworker's home: the campaigns open to them, with what is left for them."""
    campaigns = selectors.campaigns_for_worker(worker=request.user)
    return render(request, "annotation/work.html", {"campaigns": campaigns})


@role_required(Role.CROWDWORKER)
@require_safe
def rate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The worker's current item of the campaign (a reload shows the same leased item)."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    return _task_response(request, campaign=campaign)


@role_required(Role.CROWDWORKER)
@require_POST
def submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    answers = _posted_answers(request)
    try:
        result = services.submit_judgment(assignment_id=assignment_id, worker=request.user, answers=answers)
    except services.AnnotationError as exc:
        return _refused(request, assignment_id=assignment_id, error=exc, answers=answers)
    campaign = result.assignment.item.campaign
    if not request.htmx:
        return _see_rate_page(campaign)
    return _task_response(request, campaign=campaign, notice="Saved. Here is your next item.")


@role_required(Role.CROWDWORKER)
@require_POST
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    try:
        skipped = services.skip_assignment(assignment_id=assignment_id, worker=request.user)
    except services.AnnotationError as exc:
        return _refused(request, assignment_id=assignment_id, error=exc)
    campaign = skipped.item.campaign
    if not request.htmx:
        return _see_rate_page(campaign)
    return _task_response(
        request, campaign=campaign, notice="Skipped. You will not be shown that item again."
    )


# --- helpers --------------------------------------------------------------------------------


def _posted_answers(request: HttpRequest) -> dict[str, str]:
    """The answers of the form: one radio group per question, named by its attribute."""
    return {key: value for key, value in request.POST.items() if key != "csrfmiddlewaretoken"}


def _see_rate_page(campaign: Campaign) -> HttpResponseRedirect:
    response = HttpResponseRedirect(reverse("work-rate", args=[campaign.pk]))
    response.status_code = 303  # after a POST, the browser GETs the page
    return response


def _refused(
    request: HttpRequest,
    *,
    assignment_id: int,
    error: services.AnnotationError,
    answers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """The task again with the service's message: the same item with the worker's answers kept,
    or, when that item is gone (the lease ran out), the next one.

    htmx does not swap 4xx answers, so an htmx request gets 200 with the message in an alert;
    a plain form post gets the error's status.
    """
    status = 200 if request.htmx else error.status
    # Only the worker's own assignment names a campaign: another worker's stays unseen.
    campaign = Campaign.objects.filter(
        items__assignments__pk=assignment_id, items__assignments__worker=request.user
    ).first()
    if campaign is None:
        return _render(request, {"campaign": None, "error": str(error)}, status=status)
    return _task_response(
        request,
        campaign=campaign,
        error=str(error),
        answers=answers,
        answered_assignment_id=assignment_id,
        status=status,
    )


def _task_response(
    request: HttpRequest,
    *,
    campaign: Campaign,
    error: str = "",
    notice: str = "",
    answers: Mapping[str, str] | None = None,
    answered_assignment_id: int | None = None,
    status: int = 200,
) -> HttpResponse:
    assignment: Assignment | None = None
    blocked_reason = ""
    questions = campaign_questions(campaign)
    # A campaign without yes/no questions (rewriting) is worked on elsewhere: lease nothing here.
    if questions:
        try:
            assignment = services.assign_next(worker=request.user, campaign=campaign)
        except services.WorkerBlocked as exc:
            blocked_reason = str(exc)
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": assignment,
        "blocked_reason": blocked_reason,
        "rated_here": bool(questions),
        "error": error,
        "notice": notice,
        "done_today": selectors.done_today(worker=request.user, campaign=campaign),
        # The item on screen is still to do, though the selector counts it as seen.
        "left": selectors.left_for_worker(worker=request.user, campaign=campaign) + (1 if assignment else 0),
    }
    if assignment is not None:
        same_item = answered_assignment_id == assignment.pk
        item = assignment.item
        context.update(
            item=item,
            turns=[
                {"speaker": turn["speaker"], "label": _speaker_label(turn["speaker"]), "text": turn["text"]}
                for turn in item.context
            ],
            questions=_question_rows(questions, answers if same_item else None),
            moved_on=answered_assignment_id is not None and not same_item,
        )
    return _render(request, context, status=status)


def _render(request: HttpRequest, context: dict[str, Any], *, status: int) -> HttpResponse:
    template = f"{RATE_TEMPLATE}#task" if request.htmx else RATE_TEMPLATE
    return render(request, template, context, status=status)


def _speaker_label(speaker: str) -> str:
    return Speaker(speaker).label if speaker in Speaker.values else speaker


def _question_rows(questions: tuple[Question, ...], answers: Mapping[str, str] | None) -> list[QuestionRow]:
    answers = answers or {}
    return [
        QuestionRow(
            question=question,
            choices=tuple(
                Choice(value, label, answers.get(question.attribute) == value)
                for value, label in (
                    (Judgment.Value.YES, "Yes"),
                    (Judgment.Value.NO, "No"),
                    (Judgment.Value.MAYBE, question.maybe_label),
                )
            ),
        )
        for question in questions
    ]


# --- the rewrite task (METHOD.md §4) ----------------------------------------------------------

REWRITE_TEMPLATE = "annotation/rewrite.html"
_ANSWERS = {"yes": True, "no": False}


@role_required(Role.CROWDWORKER)
@require_safe
def rewrite(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """The worker's current item of a rewrite campaign, with the research done on it so far."""
    campaign = get_object_or_404(Campaign, pk=campaign_id)
    return _rewrite_response(request, campaign=campaign)


@role_required(Role.CROWDWORKER)
@require_POST
def rewrite_research(request: HttpRequest, assignment_id: int) -> HttpResponse:
    """Search for the assignment; htmx gets the research results, a plain form the page again."""
    query = request.POST.get("query", "")
    error = ""
    try:
        services.rewrite_research(assignment_id=assignment_id, worker=request.user, query=query)
    except services.AnnotationError as exc:
        return _rewrite_refused(request, assignment_id=assignment_id, error=str(exc), status=exc.status)
    except ToolsetQueryError as exc:
        error = f"Search: {exc.message}"
    assignment = Assignment.objects.select_related("item__campaign").get(pk=assignment_id)
    if request.htmx:
        context = {"assignment": assignment, "research": _research(assignment), "research_error": error}
        return render(request, f"{REWRITE_TEMPLATE}#research", context)
    if error:
        return _rewrite_response(
            request, campaign=assignment.item.campaign, research_error=error, query=query, status=400
        )
    return _see_other("work-rewrite", assignment.item.campaign)


@role_required(Role.CROWDWORKER)
@require_POST
def rewrite_submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    posted = {
        "claims_external": request.POST.get("claims_external", ""),
        "common_knowledge": request.POST.get("common_knowledge", ""),
        "rewrite": request.POST.get("rewrite", ""),
    }
    candidate_labels = {
        key.removeprefix("candidate-"): value
        for key, value in request.POST.items()
        if key.startswith("candidate-") and value
    }
    try:
        result = services.submit_rewrite(
            assignment_id=assignment_id,
            worker=request.user,
            claims_external=_ANSWERS.get(posted["claims_external"]),  # type: ignore[arg-type]
            common_knowledge=_ANSWERS.get(posted["common_knowledge"]),
            rewrite=posted["rewrite"],
            candidate_labels=candidate_labels,
        )
    except services.AnnotationError as exc:
        return _rewrite_refused(
            request, assignment_id=assignment_id, error=str(exc), status=exc.status, posted=posted
        )
    return _see_other("work-rewrite", result.assignment.item.campaign, notice="saved")


def _see_other(name: str, campaign: Campaign, notice: str = "") -> HttpResponseRedirect:
    url = reverse(name, args=[campaign.pk]) + (f"?done={notice}" if notice else "")
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def _rewrite_refused(
    request: HttpRequest,
    *,
    assignment_id: int,
    error: str,
    status: int,
    posted: Mapping[str, str] | None = None,
) -> HttpResponse:
    """The page again with the message and the worker's answers (another worker's assignment
    names no campaign). htmx does not swap 4xx answers: an htmx request gets 200."""
    status = 200 if request.htmx else status
    campaign = Campaign.objects.filter(
        items__assignments__pk=assignment_id, items__assignments__worker=request.user
    ).first()
    if campaign is None:
        return render(request, REWRITE_TEMPLATE, {"campaign": None, "error": error}, status=status)
    return _rewrite_response(
        request,
        campaign=campaign,
        error=error,
        posted=posted,
        answered_assignment_id=assignment_id,
        status=status,
    )


def _research(assignment: Assignment) -> list[dict[str, Any]]:
    """The searches of the assignment's session, newest first, each with the results it showed."""
    calls = ToolCall.objects.filter(
        session=services.research_session(assignment), tool=ToolCall.Tool.SEARCH
    ).order_by("-id")
    return [{"query": call.query, "results": call.results, "rank": call.rank} for call in calls]


def _rewrite_response(
    request: HttpRequest,
    *,
    campaign: Campaign,
    error: str = "",
    research_error: str = "",
    query: str = "",
    posted: Mapping[str, str] | None = None,
    answered_assignment_id: int | None = None,
    status: int = 200,
) -> HttpResponse:
    assignment: Assignment | None = None
    blocked_reason = ""
    is_rewrite = campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE
    if is_rewrite:
        try:
            assignment = services.assign_next(worker=request.user, campaign=campaign)
        except services.WorkerBlocked as exc:
            blocked_reason = str(exc)
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": assignment,
        "blocked_reason": blocked_reason,
        "is_rewrite": is_rewrite,
        "error": error,
        "research_error": research_error,
        "query": query,
        "notice": "Saved. Here is your next item." if request.GET.get("done") == "saved" else "",
        "done_today": selectors.done_today(worker=request.user, campaign=campaign),
        "left": selectors.left_for_worker(worker=request.user, campaign=campaign) + (1 if assignment else 0),
    }
    if assignment is not None:
        item = assignment.item
        kept = posted if posted is not None and answered_assignment_id == assignment.pk else {}
        context.update(
            item=item,
            turns=[
                {"speaker": turn["speaker"], "label": _speaker_label(turn["speaker"]), "text": turn["text"]}
                for turn in item.context
            ],
            research=_research(assignment),
            claims_external=kept.get("claims_external", ""),
            common_knowledge=kept.get("common_knowledge", ""),
            rewrite_text=kept.get("rewrite") or item.response,
            candidates=selectors.turn_candidates(turn_id=item.turn_id),
        )
    return render(request, REWRITE_TEMPLATE, context, status=status)
