"""Evaluation responses (``dialogs.evaluation_responses``): a model version's or a crowdworker's
answer to a context, stored as the last turn of a dialog of its own."""

from __future__ import annotations

import pytest

from dialogs.evaluation_responses import EVALUATION_SOURCE, EvaluationResponseExists, evaluation_response_add
from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from dialogs.models import HUMAN_RESPONDER, Dialog, EvaluationContext, EvaluationResponse
from dialogs.services import CandidateRecord
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def context() -> EvaluationContext:
    objects = [
        {
            "id": "tea",
            "purpose": "safety",
            "context": [
                {"speaker": "user", "text": "Hi"},
                {"speaker": "model", "text": "Hello"},
                {"speaker": "user", "text": "Tea?"},
            ],
        }
    ]
    imported = evaluation_set_import(name="mtb", records=parse_objects(objects))
    return imported.evaluation_set.contexts.get()


def test_a_model_answer_is_the_last_turn_of_a_dialog_of_the_contexts_turns_credited_to_the_version(
    context: EvaluationContext,
) -> None:
    candidates = [CandidateRecord(text="Yes", scores={"UNSAFE": 0.1}, chosen=True)]
    response = evaluation_response_add(
        context=context, responder="gw-2", text="Yes, please", candidates=candidates
    )

    dialog = response.turn.dialog
    assert [(t.speaker, t.text, t.model_version) for t in dialog.turns.order_by("index")] == [
        ("user", "Hi", ""),
        ("model", "Hello", ""),
        ("user", "Tea?", ""),
        ("model", "Yes, please", "gw-2"),
    ]
    assert (dialog.purpose, dialog.source, dialog.created_by) == ("safety", EVALUATION_SOURCE, None)
    assert [c.text for c in response.turn.candidates.all()] == ["Yes"]


def test_a_human_answer_is_credited_to_no_model_and_its_dialog_to_its_writer(
    context: EvaluationContext,
) -> None:
    writer = UserFactory()
    response = evaluation_response_add(
        context=context, responder=HUMAN_RESPONDER, text="Green tea!", written_by=writer
    )

    assert response.turn.model_version == ""
    assert response.turn.dialog.created_by == writer  # so the writer is never asked to rate it
    with pytest.raises(ValueError, match="crowdworker"):
        evaluation_response_add(context=context, responder=HUMAN_RESPONDER, text="Coffee")


def test_a_responder_answers_a_context_once_and_a_refused_answer_writes_nothing(
    context: EvaluationContext,
) -> None:
    evaluation_response_add(context=context, responder="gw-2", text="Yes")
    dialogs = Dialog.objects.count()

    with pytest.raises(EvaluationResponseExists) as refused:
        evaluation_response_add(context=context, responder="gw-2", text="No")
    assert refused.value.status == 409
    with pytest.raises(ValueError, match="text"):
        evaluation_response_add(context=context, responder="gw-3", text="   ")

    assert Dialog.objects.count() == dialogs
    assert list(EvaluationResponse.objects.values_list("responder", flat=True)) == ["gw-2"]
