"""What the web process asks of an evaluation: a model version answering an evaluation set.

``evaluation_request`` locks the set (it never changes once a model is judged on it), makes the
``Evaluation`` row and queues its run after commit; the run itself is
``trainer.services.evaluation_runs`` on a worker (queue ``training``: a long batch of model calls
that must not delay chat answers on ``inference``). Imports no training library, as
``trainer.services.requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import transaction

from dialogs.evaluation_sets import evaluation_set_lock
from dialogs.models import EvaluationSet
from groundwork import queueing
from trainer.models import Evaluation, ModelVersion

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@transaction.atomic
def evaluation_request(
    *,
    evaluation_set: EvaluationSet,
    model_version: ModelVersion,
    requested_by: User | None = None,
    enqueue: bool = True,
) -> Evaluation:
    """Have ``model_version`` answer every context of ``evaluation_set`` (on a worker).

    The set is locked first (``evaluation_set_lock``), which also makes two requests for the same
    set wait for each other. There is one evaluation per (set, version): an existing one is
    returned as it is (pending, running or done), except a failed one, which is queued again and
    resumes where it stopped (the contexts it answered stay answered). When the broker cannot take
    the task, a new row is removed and a re-queued one is failed again as it was
    (``TaskQueueUnavailable``, a 503); the set stays locked (it was chosen for evaluation).
    """
    evaluation_set = evaluation_set_lock(evaluation_set=evaluation_set)
    evaluation = (
        Evaluation.objects.select_for_update()
        .filter(evaluation_set=evaluation_set, model_version=model_version)
        .first()
    )
    undo: Callable[[], Any]
    if evaluation is None:
        evaluation = Evaluation.objects.create(
            evaluation_set=evaluation_set,
            model_version=model_version,
            total=evaluation_set.context_count,
            requested_by=requested_by,
        )
        undo = Evaluation.objects.filter(pk=evaluation.pk).delete
    elif evaluation.status == Evaluation.Status.FAILED:
        before = {
            "status": evaluation.status,
            "error": evaluation.error,
            "attempts": evaluation.attempts,
            "finished_at": evaluation.finished_at,
        }
        evaluation.status, evaluation.error, evaluation.attempts = Evaluation.Status.PENDING, "", 0
        evaluation.finished_at, evaluation.worker = None, ""
        evaluation.save(update_fields=["status", "error", "attempts", "finished_at", "worker"])
        pk = evaluation.pk

        def undo() -> None:
            Evaluation.objects.filter(pk=pk, status=Evaluation.Status.PENDING).update(**before)

    else:
        return evaluation
    if enqueue:
        evaluation_enqueue(evaluation, undo=undo)
    return evaluation


def evaluation_enqueue(evaluation: Evaluation, *, undo: Callable[[], Any] | None = None) -> None:
    """Queue the run of ``evaluation`` after commit (``trainer.tasks.evaluation_run_task``)."""
    queueing.enqueue("trainer.tasks.evaluation_run_task", evaluation.pk, queue="training", undo=undo)
