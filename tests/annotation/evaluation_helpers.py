"""Builders of the evaluation tests: a set, and its contexts answered by a responder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from annotation.models import Assignment, Campaign
from annotation.services import assignments
from dialogs.evaluation_responses import evaluation_response_add
from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from dialogs.models import HUMAN_RESPONDER, EvaluationResponse, EvaluationSet
from groundwork.roles import Role
from tests.factories import UserFactory


def make_set(
    *, contexts: int = 4, purposes: Sequence[str] = ("quality",), name: str = "mtb", role: str | None = None
) -> EvaluationSet:
    """A set of ``contexts`` one-turn contexts, their purposes taken in turn from ``purposes``."""
    objects: list[dict[str, Any]] = []
    for i in range(contexts):
        purpose = purposes[i % len(purposes)]
        record: dict[str, Any] = {
            "id": f"c{i}",
            "purpose": purpose,
            "context": [{"speaker": "user", "text": f"Question {i}?"}],
        }
        if purpose == "role":
            record["role"] = role
        objects.append(record)
    return evaluation_set_import(name=name, records=parse_objects(objects)).evaluation_set


def answer_all(
    evaluation_set: EvaluationSet, responder: str, *, writer: Any = None, skip: int = 0
) -> list[EvaluationResponse]:
    """``responder`` answers every context of the set (but the first ``skip``) with a text that
    names the context and a letter per responder, never the responder itself."""
    letter = {"gw-1": "A", "gw-2": "B", "gw-3": "C", HUMAN_RESPONDER: "H"}.get(responder, "X")
    if responder == HUMAN_RESPONDER and writer is None:
        writer = UserFactory(role=Role.CROWDWORKER)
    return [
        evaluation_response_add(
            context=context, responder=responder, text=f"Answer {letter}{context.index}.", written_by=writer
        )
        for context in evaluation_set.contexts.order_by("index")[skip:]
    ]


def workers(n: int) -> list[Any]:
    return [UserFactory(role=Role.CROWDWORKER) for _ in range(n)]


def leased_all(worker: Any, campaign: Campaign, answer: dict[str, str]) -> list[Assignment]:
    """The worker rates every item the campaign gives them, with ``answer``; their assignments."""
    done = []
    while (assignment := assignments.assignment_lease_next(worker=worker, campaign=campaign)) is not None:
        assignments.judgment_submit(assignment_id=assignment.pk, worker=worker, answers=answer)
        done.append(assignment)
    return done
