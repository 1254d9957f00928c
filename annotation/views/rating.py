"""Rating: the campaigns open to a worker, and the items of one campaign with their questions.

One page, ``annotation/rate.html``; its ``task`` partial (the item, the questions and the counter)
is what htmx swaps after a submit or a skip. Without JavaScript a submit or a skip answers with a
303 to the rating page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors
from annotation.models import Campaign, Judgment
from annotation.questions import Question, campaign_questions
from annotation.services import assignments
from annotation.views.common import context_turns, current_work, own_campaign, see_other, work_url
from groundwork.errors import DomainError
from groundwork.http_errors import refusal_status, shows_refusals
from groundwork.roles import Role, role_required

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


def _refused(request: HttpRequest, error: DomainError, *, assignment_id: int) -> HttpResponse:
    """The task again with the service's message: the same item with the worker's answers kept,
    or, when that item is gone (the lease ran out), the next one. An htmx request gets 200 (htmx
    swaps no 4xx answer), a plain form post the error's status."""
    status = refusal_status(request, error)
    campaign = own_campaign(request, assignment_id)
    if campaign is None:
        return _render(request, {"campaign": None, "error": error.message}, status=status)
    return _task_response(
        request,
        campaign=campaign,
        error=error.message,
        answers=_posted_answers(request),
        answered_assignment_id=assignment_id,
        status=status,
    )


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
@shows_refusals(_refused)
def submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    answers = _posted_answers(request)
    result = assignments.judgment_submit(assignment_id=assignment_id, worker=request.user, answers=answers)
    campaign = result.assignment.item.campaign
    if not request.htmx:
        return see_other(reverse("work-rate", args=[campaign.pk]))
    return _task_response(request, campaign=campaign, notice="Saved. Here is your next item.")


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_refused)
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    skipped = assignments.assignment_skip(assignment_id=assignment_id, worker=request.user)
    campaign = skipped.item.campaign
    if not request.htmx:  # back to the page the item was on (writing and comparing skip here too)
        return see_other(work_url(campaign))
    return _task_response(
        request, campaign=campaign, notice="Skipped. You will not be shown that item again."
    )


# --- helpers --------------------------------------------------------------------------------


def _posted_answers(request: HttpRequest) -> dict[str, str]:
    """The answers of the form: one radio group per question, named by its attribute."""
    return {key: value for key, value in request.POST.items() if key != "csrfmiddlewaretoken"}


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
    questions = campaign_questions(campaign)
    # A campaign without yes/no questions (rewriting) is worked on elsewhere: lease nothing here.
    work = current_work(request, campaign, lease=bool(questions))
    assignment = work.assignment
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": assignment,
        "blocked_reason": work.blocked_reason,
        "rated_here": bool(questions),
        "error": error,
        "notice": notice,
        **work.counters,
    }
    if assignment is not None:
        same_item = answered_assignment_id == assignment.pk
        item = assignment.item
        context.update(
            item=item,
            turns=context_turns(item.context),
            questions=_question_rows(questions, answers if same_item else None),
            moved_on=answered_assignment_id is not None and not same_item,
        )
    return _render(request, context, status=status)


def _render(request: HttpRequest, context: dict[str, Any], *, status: int) -> HttpResponse:
    template = f"{RATE_TEMPLATE}#task" if request.htmx else RATE_TEMPLATE
    return render(request, template, context, status=status)


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
