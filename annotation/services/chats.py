"""Chats: a crowdworker talks to the serving model, and the dialog is collected (METHOD.md §1).

Every write of a chat lives here — start, a worker's message, the model's answer (or why it did
not come), a flag on a model turn, finish — with the turn limits and where a finished chat's
turns go; who may see a chat is read in ``annotation.selectors``. Pages, API views and the Celery
task call these functions and hold no rule of their own, so the turn limits hold the same way
everywhere.

The model answers through ``settings.GROUNDWORK_RESPONDER``: a dotted path to a function
``respond(*, dialog_id) -> Turn`` that writes the model's turn itself (with its sampled
candidates, through ``dialogs.services.turn_add``) and raises when no model serves. It is
resolved at run time, never imported: trainer sits above annotation (DESIGN.md).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from annotation import selectors
from annotation.errors import ChatConflict, ChatError, ChatNotFound, TooManyOpenChats
from annotation.models import ROUTED_KIND, Campaign, Chat, ChatPurpose, ChatRouting, FlagReason, TurnFlag
from annotation.services.campaigns import campaign_add_dialogs
from dialogs.models import Dialog, Mode, Role, Speaker, Turn
from dialogs.services import turn_add
from groundwork import queueing
from groundwork.throttling import UserThrottle

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


class TurnRange(NamedTuple):
    min: int
    max: int


# How many turns a chat of each purpose has, counted as the worker's messages (one message and
# the model's answer to it are one turn). The worker cannot send past ``max`` nor finish before
# ``min``. Quality and safety are the paper's ranges (METHOD.md §1: 14–30 and 5–10); the paper
# leaves groundedness and role chats free, and ours are 5–20 so that a dialog has enough model
# turns to be worth rating without running on forever.
TURN_LIMITS: dict[str, TurnRange] = {
    ChatPurpose.QUALITY: TurnRange(14, 30),
    ChatPurpose.SAFETY: TurnRange(5, 10),
    ChatPurpose.GROUNDEDNESS: TurnRange(5, 20),  # ours
    ChatPurpose.ROLE: TurnRange(5, 20),  # ours
}


NOTE_MAX_CHARS = 2000


# Every message costs the model seconds of CPU on the inference queue, so one worker must not
# take it all: each worker's chat starts, messages and "ask again"s are rate-limited (the rates
# are REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]'s), on the API and on the pages alike, and a
# worker has at most CHAT_MAX_OPEN open chats (``chat_start``).
class ChatStartThrottle(UserThrottle):
    scope = "chat_start"
    limited = "chat starts"
    action = "start a chat"


class ChatMessageThrottle(UserThrottle):
    scope = "chat_message"
    limited = "messages"
    action = "send a message"


class ChatRetryThrottle(UserThrottle):
    scope = "chat_retry"
    limited = "requests to ask the model again"
    action = "ask the model"


# --- rules: turn limits, where the turns go -----------------------------------------------


def turn_range(purpose: str) -> TurnRange:
    return TURN_LIMITS[purpose]


def worker_turns(chat: Chat) -> int:
    """The chat's turns so far: the worker's messages."""
    return Turn.objects.filter(dialog_id=chat.dialog_id, speaker=Speaker.USER).count()


def routed_campaign(*, purpose: str) -> Campaign | None:
    """The campaign the model turns of a finished ``purpose`` chat go to, or None.

    The routing row's campaign when it names one (unless that campaign is closed, of another kind
    or an evaluation set's), else the newest open campaign of the purpose's kind that is not an
    evaluation set's; None when routing is switched off.
    """
    routing = ChatRouting.objects.select_related("campaign").filter(purpose=purpose).first()
    if routing is not None and not routing.enabled:
        return None
    if routing is not None and routing.campaign is not None:
        campaign = routing.campaign
        # Another kind only in a row saved before ChatRouting.clean checked it.
        if (
            campaign.status == Campaign.Status.CLOSED
            or campaign.kind != ROUTED_KIND[purpose]
            or campaign.evaluation_set_id is not None
        ):
            logger.warning(
                "%s chats are routed to %s, a %s %s campaign: they go nowhere",
                purpose,
                campaign,
                campaign.status,
                campaign.kind,
            )
            return None
        return campaign
    return (
        # An evaluation set's campaigns rate its responses only: chats' turns never join them.
        Campaign.objects.filter(kind=ROUTED_KIND[purpose], status=Campaign.Status.OPEN, evaluation_set=None)
        .order_by("-created_at", "-id")
        .first()
    )


# --- writes ---------------------------------------------------------------------------------


def _turns(n: int) -> str:
    return f"{n} turn" if n == 1 else f"{n} turns"


@transaction.atomic
def chat_start(*, worker: User, purpose: str, mode: str | None = None, role: Role | None = None) -> Chat:
    """A new chat and its dialog. Safety chats have a mode (natural by default); role chats talk
    to an active role, whose preamble turns precondition the model (the responder prepends them:
    they are not turns of the dialog). A worker with ``CHAT_MAX_OPEN`` open chats is refused
    (``TooManyOpenChats``) until they finish one."""
    if purpose not in ChatPurpose.values:
        raise ChatError(f"Purpose: choose one of {', '.join(ChatPurpose.values)}, not {purpose!r}.")
    mode = mode or Mode.NATURAL
    if mode not in Mode.values:
        raise ChatError(f"Mode: choose one of {', '.join(Mode.values)}, not {mode!r}.")
    if mode != Mode.NATURAL and purpose != ChatPurpose.SAFETY:
        raise ChatError("Mode: only safety chats have a mode (natural, sensitive topics or adversarial).")
    if purpose == ChatPurpose.ROLE:
        if role is None:
            raise ChatError("Role: choose the role the model plays.")
        if not role.active:
            raise ChatError(f"Role: {role.name} is not available any more; choose another.")
    elif role is not None:
        raise ChatError("Role: only role chats talk to a role.")
    # The worker's row, locked: two starts at once cannot both take the last free place.
    get_user_model().objects.select_for_update().filter(pk=worker.pk).first()
    count = selectors.open_chats(worker=worker).count()
    if count >= settings.CHAT_MAX_OPEN:
        raise TooManyOpenChats(
            f"You have {count} open chats, and {settings.CHAT_MAX_OPEN} at once is the most: go on "
            "with one of them, and start a new one when you have finished it."
        )
    dialog = Dialog.objects.create(
        external_id=f"chat-{uuid.uuid4()}",
        purpose=purpose,
        mode=mode,
        role=role,
        created_by=worker,
        source="chat",
    )
    return Chat.objects.create(dialog=dialog, worker=worker, purpose=purpose, mode=mode, role=role)


def _locked(chat: Chat, worker: User) -> Chat:
    """The chat's row, locked, once it is known to be the worker's (else ``ChatNotFound``)."""
    locked = Chat.objects.select_for_update(of=("self",)).select_related("dialog").filter(pk=chat.pk).first()
    if locked is None or locked.worker_id != worker.pk:
        raise ChatNotFound("There is no such chat of yours.")
    return locked


def _check_open(chat: Chat, doing: str) -> None:
    if chat.status == Chat.Status.FINISHED:
        raise ChatConflict(f"This chat is finished: you cannot {doing}. Start a new chat to talk more.")
    if chat.waiting:
        raise ChatConflict(f"The model is still answering your last message: wait for it before you {doing}.")


def _ask_model(chat: Chat, *, turn: Turn | None = None) -> None:
    """Ask a worker on queue ``inference`` for the model's answer, after commit (the worker must
    find the user's turn, and a rollback asks nothing). If the broker cannot take the question,
    the chat stops waiting and ``turn`` (the message just sent) is taken back: the worker sees
    a 503 and sends it again later."""
    chat.waiting = True
    chat.asked_at = timezone.now()
    chat.error = ""
    chat.save(update_fields=["waiting", "asked_at", "error"])

    def undo() -> None:
        if turn is not None:
            Turn.objects.filter(pk=turn.pk).delete()
        Chat.objects.filter(pk=chat.pk).update(waiting=False)

    queueing.enqueue("annotation.tasks.chat_respond_task", chat.dialog_id, queue="inference", undo=undo)


@transaction.atomic
def chat_say(*, chat: Chat, worker: User, text: str) -> Turn:
    """The worker's next message; the model's answer is asked of a worker on queue ``inference``."""
    chat = _locked(chat, worker)
    _check_open(chat, "send another message")
    limits = turn_range(chat.purpose)
    if worker_turns(chat) >= limits.max:
        raise ChatError(
            f"This chat has reached its maximum of {_turns(limits.max)}: finish it, or start a new one."
        )
    if not text.strip():
        raise ChatError("Your message is empty: write something to the model first.")
    try:
        turn = turn_add(dialog=chat.dialog, speaker=Speaker.USER, text=text)
    except ValueError as exc:
        raise ChatError(f"Your message: {exc}.") from None
    _ask_model(chat, turn=turn)
    return turn


@transaction.atomic
def chat_retry(*, chat: Chat, worker: User) -> Chat:
    """Ask the model again for an answer that failed or is overdue (``Chat.stalled``: no worker
    answered in time); the worker's last message has none. Should the first request still be
    answered, ``dialogs.services.turn_add`` keeps the second answer out."""
    chat = _locked(chat, worker)
    if not chat.stalled:
        _check_open(chat, "ask again")
    last = Turn.objects.filter(dialog_id=chat.dialog_id).order_by("-index").first()
    if last is None or last.speaker != Speaker.USER:
        raise ChatConflict("Your last message has its answer: there is nothing to ask again.")
    _ask_model(chat)
    return chat


def chat_respond(*, dialog_id: int) -> Turn | None:
    """Task body: the serving model answers the chat's dialog; the chat stops waiting.

    A re-run changes nothing: a chat that is not waiting is left alone, and an answer already
    written (the worker died before recording it) is recorded, not asked for twice. The model
    runs outside any transaction (it takes seconds), so the chat's row is not locked meanwhile.
    Raises what the responder raises; the task records it with ``chat_failed``.
    """
    chat = Chat.objects.filter(dialog_id=dialog_id).first()
    if chat is None or not chat.waiting:
        return None
    last = Turn.objects.filter(dialog_id=dialog_id).order_by("-index").first()
    if last is not None and last.speaker == Speaker.MODEL:
        chat_answered(chat_id=chat.pk)
        return last
    respond = import_string(settings.GROUNDWORK_RESPONDER)
    turn: Turn = respond(dialog_id=dialog_id)
    chat_answered(chat_id=chat.pk)
    return turn


def chat_answered(*, chat_id: int) -> None:
    """The model's answer is there: the worker may write again."""
    Chat.objects.filter(pk=chat_id, waiting=True).update(waiting=False, error="")


def chat_failed(*, dialog_id: int, error: BaseException | str) -> None:
    """The model could not answer: stop waiting and keep why, for the page to say."""
    if isinstance(error, BaseException):
        error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    Chat.objects.filter(dialog_id=dialog_id, waiting=True).update(waiting=False, error=error[:2000])
    logger.warning("the model did not answer dialog %s: %s", dialog_id, error)


@transaction.atomic
def chat_flag(*, turn: Turn, worker: User, reason: str, note: str = "") -> TurnFlag:
    """Flag a model turn of the worker's own adversarial chat; flagging again changes the reason."""
    chat = Chat.objects.filter(dialog_id=turn.dialog_id, worker=worker).first()
    if chat is None:
        raise ChatNotFound("There is no such turn in a chat of yours.")
    if chat.mode != Mode.ADVERSARIAL:
        raise ChatError(
            "Flags are for adversarial chats, where you try to make the model break a safety rule."
        )
    if turn.speaker != Speaker.MODEL:
        raise ChatError("Only the model's turns can be flagged.")
    if reason not in FlagReason.values:
        labels = ", ".join(str(label) for label in FlagReason.labels)
        raise ChatError(f"Reason: choose one of {labels}.")
    note = note.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise ChatError(f"Note: at most {NOTE_MAX_CHARS} characters.")
    flag, _ = TurnFlag.objects.update_or_create(
        turn=turn, worker=worker, defaults={"reason": reason, "note": note}
    )
    return flag


@dataclass(frozen=True)
class Finished:
    chat: Chat
    campaign: Campaign | None  # where its model turns went to be rated, if anywhere
    items_added: int


@transaction.atomic
def chat_finish(*, chat: Chat, worker: User) -> Finished:
    """End the chat once it has its purpose's minimum of turns, and send its model turns to the
    routed campaign (``routed_campaign``) as items to rate. Finishing again changes nothing.

    The items are added in the same transaction as the finish: both are a few inserts with no
    I/O, and together they are one fact — a finished chat whose turns never reached the campaign
    (a crash between two steps) would be lost to rating without anyone noticing.
    """
    chat = _locked(chat, worker)
    if chat.status == Chat.Status.FINISHED:
        return Finished(chat, None, 0)
    if chat.waiting:
        raise ChatConflict("The model is still answering your last message: wait for it before you finish.")
    limits = turn_range(chat.purpose)
    turns = worker_turns(chat)
    if turns < limits.min:
        raise ChatError(
            f"You have {_turns(turns)}; a {chat.get_purpose_display()} chat needs at least "
            f"{_turns(limits.min)} before you can finish it."
        )
    chat.status = Chat.Status.FINISHED
    chat.finished_at = timezone.now()
    chat.save(update_fields=["status", "finished_at"])
    campaign = routed_campaign(purpose=chat.purpose)
    added = 0
    if campaign is not None:
        added = campaign_add_dialogs(campaign=campaign, dialogs=Dialog.objects.filter(pk=chat.dialog_id))
        logger.info("chat %s finished: %d model turns added to %s", chat.pk, added, campaign)
    return Finished(chat, campaign, added)
