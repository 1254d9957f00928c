"""Chatting with the model (METHOD.md §1): the page where a chat starts (``chat_start.html``) and
the chat itself (``chat.html``), whose ``chat``, ``answer`` and ``turn`` partials htmx swaps after
a message, while it waits for the model's answer, and after a flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from annotation import selectors
from annotation.models import Chat, ChatPurpose, FlagReason
from annotation.services import chats
from annotation.views.common import see_other
from dialogs.models import Mode, Speaker, Turn
from groundwork.errors import DomainError
from groundwork.http_errors import shows_refusals
from groundwork.parsers import ParameterError, query_number
from groundwork.roles import Role, role_required
from groundwork.throttling import page_refusal, with_retry_after

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


# --- refusals, shown on the page (another worker's chat is not found: the 404 page) ------------


def _start_refused(request: HttpRequest, error: DomainError) -> HttpResponse:
    return _chat_start_page(request, error=error.message, status=error.status)


def _chat_refused(request: HttpRequest, error: DomainError, *, chat_id: int) -> HttpResponse:
    """After a message or a retry: the chat part (htmx) or the page, with why not."""
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    return _chat_page(
        request, current, error=error.message, status=error.status, text=request.POST.get("text", "")
    )


def _page_refused(request: HttpRequest, error: DomainError, *, chat_id: int, **_: Any) -> HttpResponse:
    """A plain form post (finish, flag without JavaScript): the page with why not."""
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    return render(request, CHAT_TEMPLATE, _chat_context(current, error=error.message), status=error.status)


def _poll_refused(request: HttpRequest, error: DomainError, *, chat_id: int) -> HttpResponse:
    """The page's poll for the answer asks with a number it was given: anything else is a
    client's mistake, answered in JSON like the API (``{"after": [problem]}``). Another worker's
    chat is not found (the 404 page)."""
    if not isinstance(error, ParameterError):
        raise error
    return JsonResponse(error.body(), status=error.status)


def _flag_refused(request: HttpRequest, error: DomainError, *, chat_id: int, turn_id: int) -> HttpResponse:
    """htmx swaps in the turn with why its flag was refused; a plain post gets the page."""
    if not request.htmx:
        return _page_refused(request, error, chat_id=chat_id)
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    turn = get_object_or_404(Turn, pk=turn_id, dialog_id=current.dialog_id)
    return _flagged_turn(request, current, turn, error=error.message)


# --- pages ------------------------------------------------------------------------------------


@role_required(Role.CROWDWORKER)
@require_safe
def chat_home(request: HttpRequest) -> HttpResponse:
    """Pick a purpose (and a mode or a role) and start a chat; the worker's open chats."""
    return _chat_start_page(request)


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_start_refused)
def chat_start(request: HttpRequest) -> HttpResponse:
    refusal = page_refusal(request, chats.ChatStartThrottle)
    if refusal is not None:
        return with_retry_after(_chat_start_page(request, error=refusal.message, status=429), refusal)
    slug = request.POST.get("role", "")
    started = chats.chat_start(
        worker=request.user,
        purpose=request.POST.get("purpose", ""),
        mode=request.POST.get("mode") or None,
        role=selectors.role_by_slug(slug) if slug else None,
    )
    return _see_chat(started)


@role_required(Role.CROWDWORKER)
@require_safe
@shows_refusals(_poll_refused)
def chat_detail(request: HttpRequest, chat_id: int) -> HttpResponse:
    """The chat. An htmx request is the "thinking" placeholder asking whether the answer is
    there: 204 (nothing to swap, ask again) while the model works, else the new turns."""
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    if request.htmx:
        if current.waiting:
            return HttpResponse(status=204)
        after = query_number(request.GET, "after")
        turns = selectors.chat_turns(chat=current)
        if after is not None:
            turns = [turn for turn in turns if turn.index > after]
        return render(request, f"{CHAT_TEMPLATE}#answer", _chat_context(current, turns=turns))
    return render(request, CHAT_TEMPLATE, _chat_context(current))


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_chat_refused)
def chat_say(request: HttpRequest, chat_id: int) -> HttpResponse:
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    text = request.POST.get("text", "")
    refusal = page_refusal(request, chats.ChatMessageThrottle)
    if refusal is not None:
        page = _chat_page(request, current, error=refusal.message, status=429, text=text)
        return with_retry_after(page, refusal)
    chats.chat_say(chat=current, worker=request.user, text=text)
    return _chat_page(request, current)


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_chat_refused)
def chat_retry(request: HttpRequest, chat_id: int) -> HttpResponse:
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    refusal = page_refusal(request, chats.ChatRetryThrottle)
    if refusal is not None:
        return with_retry_after(_chat_page(request, current, error=refusal.message, status=429), refusal)
    chats.chat_retry(chat=current, worker=request.user)
    return _chat_page(request, current)


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_page_refused)
def chat_finish(request: HttpRequest, chat_id: int) -> HttpResponse:
    """A plain form post (the whole page changes): the finished chat, or the page with why not."""
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    finished = chats.chat_finish(chat=current, worker=request.user)
    if finished.campaign is not None:
        messages.success(
            request, "Thank you: your chat is finished, and the model's answers go to other workers to rate."
        )
    else:
        messages.success(request, "Thank you: your chat is finished.")
    return _see_chat(finished.chat)


@role_required(Role.CROWDWORKER)
@require_POST
@shows_refusals(_flag_refused)
def chat_flag(request: HttpRequest, chat_id: int, turn_id: int) -> HttpResponse:
    """Flag a model turn; htmx swaps in the turn (with its flag), a plain post goes back to the
    page at the turn."""
    current = selectors.chat_for_worker(worker=request.user, chat_id=chat_id)
    turn = get_object_or_404(Turn, pk=turn_id, dialog_id=current.dialog_id)
    chats.chat_flag(
        turn=turn,
        worker=request.user,
        reason=request.POST.get("reason", ""),
        note=request.POST.get("note", ""),
    )
    if not request.htmx:
        return _see_chat(current, anchor=f"turn-{turn.index}")
    return _flagged_turn(request, current, turn)


# --- helpers --------------------------------------------------------------------------------


def _see_chat(current: Chat, anchor: str = "") -> HttpResponse:
    return see_other(reverse("work-chat-detail", args=[current.pk]) + (f"#{anchor}" if anchor else ""))


def _flagged_turn(request: HttpRequest, current: Chat, turn: Turn, *, error: str = "") -> HttpResponse:
    flagged = next(t for t in selectors.chat_turns(chat=current) if t.pk == turn.pk)
    context = {**_chat_context(current, turns=[flagged]), "turn": flagged, "flag_error": error}
    return render(request, f"{CHAT_TEMPLATE}#turn", context)


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
        turns = selectors.chat_turns(chat=current)
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
        "chat_roles": list(selectors.active_roles()),
        "open_chats": list(selectors.open_chats(worker=request.user)),
        "error": error,
    }
    return render(request, CHAT_START_TEMPLATE, context, status=status)
