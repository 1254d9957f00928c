"""Crowdworker pages: the campaigns open to a worker, rating the items of one campaign, rewriting,
and chatting with the model (``annotation/chat.html``).

One page, ``annotation/rate.html``; its ``task`` partial (the item, the questions and the counter)
is what htmx swaps after a submit or a skip. Every form is a real form, so the page works
without JavaScript: the views then answer with a 303 to the rating page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors
from annotation.errors import AnnotationError, ChatError, ChatNotFound, WorkerBlocked
from annotation.models import Assignment, Campaign, Chat, ChatPurpose, FlagReason, Judgment
from annotation.questions import Question, campaign_questions
from annotation.services import assignments, chats, rewrites
from dialogs.models import Mode, Speaker, Turn
from groundwork.parsers import ParameterError, query_number
from groundwork.queueing import TaskQueueUnavailable
from groundwork.roles import Role, role_required
from groundwork.throttling import page_refusal, with_retry_after
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
        result = assignments.judgment_submit(
            assignment_id=assignment_id, worker=request.user, answers=answers
        )
    except AnnotationError as exc:
        return _refused(request, assignment_id=assignment_id, error=exc, answers=answers)
    campaign = result.assignment.item.campaign
    if not request.htmx:
        return _see_rate_page(campaign)
    return _task_response(request, campaign=campaign, notice="Saved. Here is your next item.")


@role_required(Role.CROWDWORKER)
@require_POST
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    try:
        skipped = assignments.assignment_skip(assignment_id=assignment_id, worker=request.user)
    except AnnotationError as exc:
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
    error: AnnotationError,
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
            assignment = assignments.assignment_lease_next(worker=request.user, campaign=campaign)
        except WorkerBlocked as exc:
            blocked_reason = str(exc)
    context: dict[str, Any] = {
        "campaign": campaign,
        "assignment": assignment,
        "blocked_reason": blocked_reason,
        "rated_here": bool(questions),
        "error": error,
        "notice": notice,
        "done_today": selectors.done_today(worker=request.user, campaign=campaign),
        # The item on screen is still to do, though it counts as seen.
        "left": selectors.left_for_worker(
            worker=request.user, campaign=campaign, holding=assignment is not None
        ),
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
        rewrites.rewrite_research(assignment_id=assignment_id, worker=request.user, query=query)
    except AnnotationError as exc:
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
        result = rewrites.rewrite_submit(
            assignment_id=assignment_id,
            worker=request.user,
            claims_external=_ANSWERS.get(posted["claims_external"]),  # type: ignore[arg-type]
            common_knowledge=_ANSWERS.get(posted["common_knowledge"]),
            rewrite=posted["rewrite"],
            candidate_labels=candidate_labels,
        )
    except AnnotationError as exc:
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
    """The worker's searches of the assignment's session, newest first, each with the results it
    showed: the ones a submission may cite."""
    calls = reversed(selectors.research_calls(assignment))
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
            assignment = assignments.assignment_lease_next(worker=request.user, campaign=campaign)
        except WorkerBlocked as exc:
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
        "left": selectors.left_for_worker(
            worker=request.user, campaign=campaign, holding=assignment is not None
        ),
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
            rewrite_max_chars=settings.TURN_MAX_CHARS,
            candidates=selectors.turn_candidates(turn_id=item.turn_id),
        )
    return render(request, REWRITE_TEMPLATE, context, status=status)


# --- chatting with the model (METHOD.md §1) ---------------------------------------------------

CHAT_TEMPLATE = "annotation/chat.html"
CHAT_START_TEMPLATE = "annotation/chat_start.html"

# What each purpose asks of the worker, shown on the page where a chat starts.
PURPOSE_ABOUT = {
    ChatPurpose.QUALITY: "Talk about anything you like, as you would with a person. Other workers then "
    "rate whether the model's answers are sensible, specific and interesting.",
    ChatPurpose.SAFETY: "Talk naturally, bring up sensitive topics, or try on purpose to make the model "
    "say something harmful, biased or false. Other workers rate its answers for safety.",
    ChatPurpose.GROUNDEDNESS: "Ask for information: facts about places, people, science, history. Other "
    "workers check the model's claims against sources and rewrite them.",
    ChatPurpose.ROLE: "Talk to the model while it plays a role. Other workers rate whether its answers "
    "are helpful and what an agent in that role would say.",
}
MODE_ABOUT = {
    Mode.NATURAL: "talk as you normally would",
    Mode.SENSITIVE: "bring up sensitive topics",
    Mode.ADVERSARIAL: "try to make the model break a safety rule; flag its answers that do",
}


@dataclass(frozen=True)
class PurposeEntry:
    purpose: str
    label: str
    about: str
    turns: chats.TurnRange


@role_required(Role.CROWDWORKER)
@require_safe
def chat_home(request: HttpRequest) -> HttpResponse:
    """Pick a purpose (and a mode or a role) and start a chat; the worker's open chats."""
    return _chat_start_page(request)


@role_required(Role.CROWDWORKER)
@require_POST
def chat_start(request: HttpRequest) -> HttpResponse:
    refusal = page_refusal(request, chats.ChatStartThrottle)
    if refusal is not None:
        return with_retry_after(_chat_start_page(request, error=refusal.message, status=429), refusal)
    slug = request.POST.get("role", "")
    try:
        started = chats.chat_start(
            worker=request.user,
            purpose=request.POST.get("purpose", ""),
            mode=request.POST.get("mode") or None,
            role=chats.role_by_slug(slug) if slug else None,
        )
    except ChatError as exc:
        return _chat_start_page(request, error=str(exc), status=exc.status)
    return _see_chat(started)


@role_required(Role.CROWDWORKER)
@require_safe
def chat_detail(request: HttpRequest, chat_id: int) -> HttpResponse:
    """The chat. An htmx request is the "thinking" placeholder asking whether the answer is
    there: 204 (nothing to swap, ask again) while the model works, else the new turns."""
    current = _own_chat(request, chat_id)
    if request.htmx:
        if current.waiting:
            return HttpResponse(status=204)
        try:
            after = query_number(request.GET, "after")
        except ParameterError as exc:
            return JsonResponse({exc.name: [exc.message]}, status=400)
        turns = chats.chat_turns(chat=current)
        if after is not None:
            turns = [turn for turn in turns if turn.index > after]
        return render(request, f"{CHAT_TEMPLATE}#answer", _chat_context(current, turns=turns))
    return render(request, CHAT_TEMPLATE, _chat_context(current))


@role_required(Role.CROWDWORKER)
@require_POST
def chat_say(request: HttpRequest, chat_id: int) -> HttpResponse:
    current = _own_chat(request, chat_id)
    text = request.POST.get("text", "")
    refusal = page_refusal(request, chats.ChatMessageThrottle)
    if refusal is not None:
        page = _chat_page(request, current, error=refusal.message, status=429, text=text)
        return with_retry_after(page, refusal)
    try:
        chats.chat_say(chat=current, worker=request.user, text=text)
    except (ChatError, TaskQueueUnavailable) as exc:
        return _chat_page(request, current, error=str(exc), status=exc.status, text=text)
    return _chat_page(request, current)


@role_required(Role.CROWDWORKER)
@require_POST
def chat_retry(request: HttpRequest, chat_id: int) -> HttpResponse:
    current = _own_chat(request, chat_id)
    refusal = page_refusal(request, chats.ChatRetryThrottle)
    if refusal is not None:
        return with_retry_after(_chat_page(request, current, error=refusal.message, status=429), refusal)
    try:
        chats.chat_retry(chat=current, worker=request.user)
    except (ChatError, TaskQueueUnavailable) as exc:
        return _chat_page(request, current, error=str(exc), status=exc.status)
    return _chat_page(request, current)


@role_required(Role.CROWDWORKER)
@require_POST
def chat_finish(request: HttpRequest, chat_id: int) -> HttpResponse:
    """A plain form post (the whole page changes): the finished chat, or the page with why not."""
    current = _own_chat(request, chat_id)
    try:
        finished = chats.chat_finish(chat=current, worker=request.user)
    except ChatError as exc:
        return render(request, CHAT_TEMPLATE, _chat_context(current, error=str(exc)), status=exc.status)
    if finished.campaign is not None:
        messages.success(
            request, "Thank you: your chat is finished, and the model's answers go to other workers to rate."
        )
    else:
        messages.success(request, "Thank you: your chat is finished.")
    return _see_chat(finished.chat)


@role_required(Role.CROWDWORKER)
@require_POST
def chat_flag(request: HttpRequest, chat_id: int, turn_id: int) -> HttpResponse:
    """Flag a model turn; htmx swaps in the turn (with its flag or the error), a plain post
    goes back to the page at the turn."""
    current = _own_chat(request, chat_id)
    turn = get_object_or_404(Turn, pk=turn_id, dialog_id=current.dialog_id)
    error = ""
    try:
        chats.chat_flag(
            turn=turn,
            worker=request.user,
            reason=request.POST.get("reason", ""),
            note=request.POST.get("note", ""),
        )
    except ChatError as exc:
        if not request.htmx:
            return render(request, CHAT_TEMPLATE, _chat_context(current, error=str(exc)), status=exc.status)
        error = str(exc)
    if not request.htmx:
        return _see_chat(current, anchor=f"turn-{turn.index}")
    flagged = next(t for t in chats.chat_turns(chat=current) if t.pk == turn.pk)
    context = {**_chat_context(current, turns=[flagged]), "turn": flagged, "flag_error": error}
    return render(request, f"{CHAT_TEMPLATE}#turn", context)


def _own_chat(request: HttpRequest, chat_id: int) -> Chat:
    try:
        return chats.chat_for_worker(worker=request.user, chat_id=chat_id)
    except ChatNotFound:
        raise Http404("There is no such chat of yours.") from None


def _see_chat(current: Chat, anchor: str = "") -> HttpResponseRedirect:
    url = reverse("work-chat-detail", args=[current.pk]) + (f"#{anchor}" if anchor else "")
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def _chat_page(
    request: HttpRequest, current: Chat, *, error: str = "", status: int = 200, text: str = ""
) -> HttpResponse:
    """After a message or a retry: htmx gets the chat part (200 even for a refusal, since htmx
    does not swap 4xx answers), a plain form the page again (303, or the refusal's status)."""
    current.refresh_from_db()
    if request.htmx:
        return render(request, f"{CHAT_TEMPLATE}#chat", _chat_context(current, error=error, text=text))
    if error:
        return render(request, CHAT_TEMPLATE, _chat_context(current, error=error, text=text), status=status)
    return _see_chat(current)


def _chat_context(
    current: Chat, *, turns: list[Turn] | None = None, error: str = "", text: str = ""
) -> dict[str, Any]:
    """What the chat page and its parts show; ``turns`` (default: all of them) is what a part
    renders (the new turns of an answer, the flagged turn)."""
    if turns is None:
        turns = chats.chat_turns(chat=current)
        count = sum(1 for turn in turns if turn.speaker == Speaker.USER)
    else:
        count = chats.worker_turns(current)
    limits = chats.turn_range(current.purpose)
    return {
        "chat": current,
        "turns": turns,
        "last_index": turns[-1].index if turns else -1,
        "preamble": current.role.preamble if current.role_id else [],
        "model_label": current.role.name if current.role_id else "Model",
        "count": count,
        "limits": limits,
        "can_send": current.status == Chat.Status.OPEN and count < limits.max,
        "can_finish": count >= limits.min,
        "flaggable": current.mode == Mode.ADVERSARIAL,
        "reasons": FlagReason.choices,
        "error": error,
        "text": text,
    }


def _chat_start_page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    purposes = [
        PurposeEntry(purpose, ChatPurpose(purpose).label, PURPOSE_ABOUT[purpose], chats.turn_range(purpose))
        for purpose in ChatPurpose.values
    ]
    context = {
        "purposes": purposes,
        "modes": [(mode, Mode(mode).label, MODE_ABOUT[mode]) for mode in Mode.values],
        "chat_roles": list(chats.active_roles()),
        "open_chats": list(chats.open_chats(worker=request.user)),
        "error": error,
    }
    return render(request, CHAT_START_TEMPLATE, context, status=status)
