"""Every write of evaluation responses: a model version's or the human baseline's answer to a
context of an evaluation set (``EvaluationResponse``), stored as the last turn of a dialog of its own.

The dialog (``source`` ``EVALUATION_SOURCE``) holds the context's turns, then the response; its
``created_by`` is the crowdworker who wrote a human response (so they never rate it), and its
purpose and role are the context's. Such dialogs are answers to a test, not conversations: dataset
builds leave them out, as they leave out the dialogs evaluation contexts were cut from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction

from dialogs.models import (
    HUMAN_RESPONDER,
    Dialog,
    EvaluationContext,
    EvaluationResponse,
    Speaker,
)
from dialogs.services import CandidateRecord, turn_add
from groundwork.errors import DomainError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

EVALUATION_SOURCE = "evaluation"


class EvaluationResponseExists(DomainError):
    """The responder has already answered this context."""

    status = 409


@transaction.atomic
def evaluation_response_add(
    *,
    context: EvaluationContext,
    responder: str,
    text: str,
    written_by: User | None = None,
    base_text: str = "",
    research: Iterable[dict[str, str]] = (),
    candidates: Iterable[CandidateRecord] = (),
    fallback: str = "",
) -> EvaluationResponse:
    """Store ``responder``'s answer to ``context``: a dialog of the context's turns and the answer.

    ``responder`` is a model version's name (the turn is credited to it) or ``HUMAN_RESPONDER``
    (then ``written_by`` is the crowdworker who wrote it, and there are no candidates). One answer
    per responder and context: ``EvaluationResponseExists`` for a second. A bad text (empty, too
    long) is a ``ValueError`` from ``turn_add``; nothing is written then.
    """
    if not responder:
        raise ValueError("an evaluation response needs a responder")
    human = responder == HUMAN_RESPONDER
    if human and written_by is None:
        raise ValueError("a human response needs the crowdworker who wrote it")
    exists = EvaluationResponseExists(f"{responder} has already answered context {context.external_id}.")
    if EvaluationResponse.objects.filter(context=context, responder=responder).exists():
        raise exists
    try:
        with transaction.atomic():
            dialog = Dialog.objects.create(
                external_id=f"evaluation-{context.pk}-{responder}",
                purpose=context.purpose,
                role=context.role,
                created_by=written_by,
                source=EVALUATION_SOURCE,
                meta={"evaluation_set": context.evaluation_set_id, "context": context.external_id},
            )
            for turn in context.turns:
                turn_add(dialog=dialog, speaker=turn["speaker"], text=turn["text"])
            answer = turn_add(
                dialog=dialog,
                speaker=Speaker.MODEL,
                text=text,
                base_text=base_text,
                research=research,
                candidates=candidates,
                model_version="" if human else responder,
                fallback=fallback,
            )
            return EvaluationResponse.objects.create(context=context, responder=responder, turn=answer)
    except IntegrityError:  # a concurrent answer of the same responder won
        raise exists from None
