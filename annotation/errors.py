"""What the annotation engine refuses, each error with the HTTP status it is answered with.

Services raise them; one handler turns them into answers (``groundwork.http_errors``): the API
answers ``{"detail": message}`` with the status, a page shows the message.
"""

from __future__ import annotations

from groundwork.errors import DomainError
from groundwork.jsonl import ImportRefused


class AnnotationError(DomainError):
    status = 400


class AssignmentNotFound(AnnotationError):
    status = 404


class AssignmentForbidden(AnnotationError):
    status = 403


class AssignmentConflict(AnnotationError):
    status = 409


class InvalidAnswers(AnnotationError):
    status = 400


class WorkerBlocked(AnnotationError):
    status = 403


class JudgmentImportError(ImportRefused, AnnotationError):
    """A judgment import was refused; nothing was written (400 with every bad line)."""


# --- chats ------------------------------------------------------------------------------------


class ChatError(AnnotationError):
    status = 400


class ChatNotFound(ChatError):
    """No such chat, or another worker's (which is not told apart: 404 either way)."""

    status = 404


class ChatConflict(ChatError):
    """The chat is not in a state for this: the model is answering, or it is finished."""

    status = 409


class TooManyOpenChats(ChatError):
    """The worker has ``CHAT_MAX_OPEN`` open chats: they go on in one of those first."""

    status = 429
