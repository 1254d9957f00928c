"""Evaluating a model version (issue 15): a request makes one evaluation and queues one task (none
and no row when the broker is down); the run answers every context of the set once, batched as
chats are answered, credited to the version, and resumes after a partial run without answering a
context twice; the metrics measured without raters (discriminator means, Hits@1 of 20, fallbacks).

The runs here call the worker's service in the test process (``evaluation_run``); one test goes
through the API to a real worker on the ``training`` queue."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from kombu.exceptions import OperationalError
from rest_framework.test import APIClient

from annotation.models import Item
from dialogs import evaluation_responses
from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from dialogs.models import Candidate, EvaluationResponse, EvaluationSet, Turn
from groundwork.queueing import TaskQueueUnavailable
from tests.trainer.helpers import TOPICS, tiny_model
from trainer import inference, sampling, tasks
from trainer.models import Evaluation, ModelVersion, TrainingJob
from trainer.services import evaluation_runs, evaluations
from trainer.tokenizer import SENTINEL, SPEAKER_TOKENS, special_id


def contexts(count: int, *, references: bool = True) -> list[dict[str, Any]]:
    """``count`` one-turn quality contexts; each reference repeats the user's turn."""
    out = []
    for i in range(count):
        text = f"Tell me about {TOPICS[i % len(TOPICS)]}, number {i}."
        context = {"id": f"c{i}", "purpose": "quality", "context": [{"speaker": "user", "text": text}]}
        out.append({**context, "reference": text} if references else context)
    return out


def evaluation_set(count: int = 6, *, name: str = "mtb", references: bool = True) -> EvaluationSet:
    records = parse_objects(contexts(count, references=references))
    return evaluation_set_import(name=name, records=records).evaluation_set


def version_like(base: ModelVersion, name: str, kind: str | None = None) -> ModelVersion:
    """A version with ``base``'s weights; fine-tuned by a job of ``kind`` when given (what it can
    do follows from its lineage)."""
    job = TrainingJob.objects.create(kind=kind, status="succeeded", total_steps=1) if kind else None
    return ModelVersion.objects.create(
        name=name, parent=base, job=job, directory=base.directory, tokenizer_sha256=base.tokenizer_sha256
    )


def evaluate(evaluation_set: EvaluationSet, version: ModelVersion, **options: Any) -> Evaluation:
    """Request the evaluation (nothing is queued inside a test's transaction) and run it here."""
    evaluation = evaluations.evaluation_request(evaluation_set=evaluation_set, model_version=version)
    return evaluation_runs.evaluation_run(evaluation_id=evaluation.pk, **options)


def answers(evaluation: Evaluation) -> dict[str, EvaluationResponse]:
    responses = EvaluationResponse.objects.filter(
        context__evaluation_set=evaluation.evaluation_set, responder=evaluation.model_version.name
    ).select_related("context", "turn")
    return {r.context.external_id: r for r in responses}


@pytest.fixture(autouse=True)
def _fresh_models() -> None:
    """Each test loads its own models (a loaded one is kept by version name)."""
    inference._loaded.clear()


@pytest.fixture
def sent(monkeypatch: Any) -> list[dict[str, Any]]:
    """The evaluation tasks sent to the broker (recorded, not sent)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        tasks.evaluation_run_task,
        "apply_async",
        lambda args=(), kwargs=None, **options: calls.append({"args": tuple(args), **options}),
    )
    return calls


# --- the request ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_request_makes_one_evaluation_locks_the_set_and_queues_one_task_after_commit(
    sent: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    version = ModelVersion.objects.create(name="v1", directory="models/v1", tokenizer_sha256="t" * 64)
    chosen = evaluation_set(3)

    with django_capture_on_commit_callbacks(execute=True):
        evaluation = evaluations.evaluation_request(evaluation_set=chosen, model_version=version)
        assert not sent  # nothing before commit
    with django_capture_on_commit_callbacks(execute=True):
        again = evaluations.evaluation_request(evaluation_set=chosen, model_version=version)

    assert again.pk == evaluation.pk
    assert Evaluation.objects.count() == 1
    assert (evaluation.status, evaluation.done, evaluation.total) == ("pending", 0, 3)
    assert [(call["args"], call["queue"]) for call in sent] == [((evaluation.pk,), "training")]
    chosen.refresh_from_db()
    assert chosen.locked


@pytest.mark.django_db
def test_a_failed_evaluation_is_queued_again_and_when_the_broker_is_down_nothing_changes(
    monkeypatch: Any, sent: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    version = ModelVersion.objects.create(name="v1", directory="models/v1", tokenizer_sha256="t" * 64)
    chosen = evaluation_set(3)
    failed = Evaluation.objects.create(
        evaluation_set=chosen, model_version=version, status="failed", error="boom", attempts=3, total=3
    )

    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(tasks.evaluation_run_task, "apply_async", down)
        with django_capture_on_commit_callbacks() as callbacks:
            evaluations.evaluation_request(evaluation_set=chosen, model_version=version)
        with pytest.raises(TaskQueueUnavailable):
            callbacks[0]()  # the commit's callback: the broker refuses
    failed.refresh_from_db()
    assert (failed.status, failed.error, failed.attempts) == ("failed", "boom", 3)  # as it was

    with django_capture_on_commit_callbacks(execute=True):
        queued = evaluations.evaluation_request(evaluation_set=chosen, model_version=version)
    assert queued.pk == failed.pk
    assert (queued.status, queued.error, queued.attempts) == ("pending", "", 0)
    assert [call["args"] for call in sent] == [(failed.pk,)]


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_503_and_keeps_no_evaluation_when_the_broker_is_down(
    monkeypatch: Any, users: dict[Any, Any]
) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.evaluation_run_task, "apply_async", down)
    ModelVersion.objects.create(name="v1", directory="models/v1", tokenizer_sha256="t" * 64)
    chosen = evaluation_set(2)
    client = APIClient()
    client.force_login(users["researcher"])

    answer = client.post(
        "/api/v1/evaluations/", {"evaluation_set": chosen.pk, "model_version": "v1"}, format="json"
    )

    assert answer.status_code == 503, answer.content
    assert answer.json()["detail"].startswith("The task queue is down")
    assert not Evaluation.objects.exists()


# --- the run ----------------------------------------------------------------------------------


@pytest.fixture
def artifacts(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path


@pytest.mark.django_db
def test_the_run_answers_every_context_once_credited_to_the_version(artifacts: None) -> None:
    version = tiny_model()
    chosen = evaluation_set(7, references=False)

    evaluation = evaluate(chosen, version, batch_contexts=3)

    assert evaluation.status == "done", evaluation.error
    assert (evaluation.done, evaluation.total, evaluation.attempts) == (7, 7, 1)
    answered = answers(evaluation)
    assert sorted(answered) == [f"c{i}" for i in range(7)]
    for external_id, response in answered.items():
        turns = list(Turn.objects.filter(dialog=response.turn.dialog_id).order_by("index"))
        assert [(t.speaker, t.text) for t in turns[:-1]] == [
            (t["speaker"], t["text"]) for t in response.context.turns
        ], external_id
        assert turns[-1] == response.turn
        assert response.turn.model_version == version.name
        candidates = list(Candidate.objects.filter(turn=response.turn))
        assert len(candidates) == 16  # sample-and-rank's 16, every one kept
        assert sum(c.chosen for c in candidates) == (0 if response.turn.fallback == "unsafe" else 1)
        assert {c.scores["ranking"] for c in candidates} == {"likelihood"}
    metrics = evaluation.metrics
    assert metrics["discriminators"] == {}  # a pre-trained model has none
    assert (metrics["hits_at_1"], metrics["hits_contexts"]) == (None, 0)  # no references
    assert metrics["validation_loss"] == version.metrics["final"]["validation_loss"]
    assert metrics["contexts_per_second"] > 0
    assert metrics["fallbacks"] == sum(1 for r in answered.values() if r.turn.fallback)

    # Its answers went up for blind rating: the set's SSI campaign (quality contexts) has them.
    rated = Item.objects.filter(campaign__evaluation_set=chosen)
    assert sorted(rated.values_list("turn_id", flat=True)) == sorted(r.turn_id for r in answered.values())
    assert set(rated.values_list("campaign__kind", flat=True)) == {"ssi"}

    # Asking again changes nothing: the evaluation is done.
    again = evaluations.evaluation_request(evaluation_set=chosen, model_version=version)
    assert evaluation_runs.evaluation_run(evaluation_id=again.pk).status == "done"
    assert EvaluationResponse.objects.count() == 7


@pytest.mark.django_db
def test_a_stopped_run_resumes_where_it_stopped_without_answering_a_context_twice(
    artifacts: None, monkeypatch: Any
) -> None:
    version = tiny_model()
    chosen = evaluation_set(6, references=False)
    real = evaluation_runs.evaluation_response_add
    calls = []

    def dies_at_the_fourth(**kwargs: Any) -> EvaluationResponse:
        calls.append(kwargs["context"].external_id)
        if len(calls) == 4:
            raise RuntimeError("the database went away")
        return real(**kwargs)

    monkeypatch.setattr(evaluation_runs, "evaluation_response_add", dies_at_the_fourth)
    evaluation = evaluations.evaluation_request(evaluation_set=chosen, model_version=version)
    with pytest.raises(RuntimeError, match="the database went away"):
        evaluation_runs.evaluation_run(evaluation_id=evaluation.pk, batch_contexts=2)
    evaluation.refresh_from_db()
    assert (evaluation.status, evaluation.error) == ("failed", "RuntimeError: the database went away")
    assert evaluation.done == 2  # the first batch; the second's answers went with it
    first = {external_id: (r.pk, r.turn.text) for external_id, r in answers(evaluation).items()}
    assert len(first) == 2

    monkeypatch.setattr(evaluation_runs, "evaluation_response_add", real)
    evaluations.evaluation_request(evaluation_set=chosen, model_version=version)  # queued again
    evaluation = evaluation_runs.evaluation_run(evaluation_id=evaluation.pk, batch_contexts=2)

    assert evaluation.status == "done", evaluation.error
    assert (evaluation.done, evaluation.total) == (6, 6)
    answered = answers(evaluation)
    assert sorted(answered) == [f"c{i}" for i in range(6)]
    assert EvaluationResponse.objects.count() == 6
    assert {k: (r.pk, r.turn.text) for k, r in answered.items() if k in first} == first  # kept as they were


@pytest.mark.django_db
def test_batched_and_one_at_a_time_answer_alike_and_a_seed_repeats_the_batched_run(artifacts: None) -> None:
    base = tiny_model()
    chosen = evaluation_set(6, references=False)
    batched = evaluate(chosen, version_like(base, "batched"), batch_contexts=4, seed=11)
    repeated = evaluate(chosen, version_like(base, "repeated"), batch_contexts=4, seed=11)
    alone = evaluate(chosen, version_like(base, "alone"), batch_contexts=1, seed=11)

    texts = {k: r.turn.text for k, r in answers(batched).items()}
    assert texts == {k: r.turn.text for k, r in answers(repeated).items()}
    for evaluation in (batched, alone):
        assert evaluation.status == "done", evaluation.error
        for response in answers(evaluation).values():
            candidates = list(Candidate.objects.filter(turn=response.turn))
            assert len(candidates) == inference.sampling_settings().candidates
            assert all(c.scores["tokens"] <= inference.sampling_settings().max_new_tokens for c in candidates)
            assert {frozenset(c.scores) - {"dropped", "rank_score"} for c in candidates} == {
                frozenset({"log_likelihood", "mean_log_likelihood", "tokens", "finished", "ranking"})
            }
    assert len(answers(alone)) == len(answers(batched)) == 6


class AlwaysUnsafe(sampling.Scorer):
    """A scorer whose UNSAFE discriminator says ``<1>`` for every response: every candidate is
    predicted unsafe."""

    def score_with_cache(
        self, cache: Any, prompt_length: int, lengths: Any, attributes: Any, prompt_mask: Any = None
    ) -> dict:
        scores = super().score_with_cache(cache, prompt_length, lengths, attributes, prompt_mask)
        scores["UNSAFE"] = [1.0] * len(lengths)
        return scores


def _loaded_as(version: ModelVersion, wrap: Callable[[sampling.Scorer], torch.nn.Module]) -> None:
    """The version's model, wrapped, is what answers for it."""
    loaded = inference.scorer_for(version)
    inference._loaded[version.name] = sampling.Scorer(
        wrap(loaded), loaded.tokenizer, discriminators=loaded.discriminators
    )


@pytest.mark.django_db
def test_when_every_candidate_is_unsafe_the_fallback_reply_is_the_answer_and_counted(
    artifacts: None, settings: Any
) -> None:
    settings.SAFE_FALLBACK_REPLY = "Let us talk about something else."
    version = version_like(tiny_model(), "qs-unsafe", "finetune_quality_safety")
    loaded = inference.scorer_for(version)
    inference._loaded[version.name] = AlwaysUnsafe(loaded.model, loaded.tokenizer, discriminators=True)

    evaluation = evaluate(evaluation_set(5, references=False), version)

    assert evaluation.status == "done", evaluation.error
    assert evaluation.metrics["fallbacks"] == 5
    assert evaluation.metrics["discriminators"] == {}  # no answer was chosen by them
    for response in answers(evaluation).values():
        assert (response.turn.text, response.turn.fallback) == ("Let us talk about something else.", "unsafe")
        assert not Candidate.objects.filter(turn=response.turn, chosen=True).exists()


@pytest.mark.django_db
def test_the_discriminator_means_are_those_of_the_chosen_answers(artifacts: None, settings: Any) -> None:
    settings.INFERENCE_SAFETY_THRESHOLD = 0.0  # an untrained discriminator's noise lets every one pass
    version = version_like(tiny_model(), "qs", "finetune_quality_safety")

    evaluation = evaluate(evaluation_set(5, references=False), version)

    chosen = [Candidate.objects.get(turn=r.turn, chosen=True).scores for r in answers(evaluation).values()]
    assert len(chosen) == 5
    means = evaluation.metrics["discriminators"]
    assert set(means) == set(sampling.RANKED_ATTRIBUTES)
    for name, mean in means.items():
        assert mean == pytest.approx(sum(s[f"P({name})"] for s in chosen) / 5, abs=1e-4)
    assert evaluation.metrics["fallbacks"] == 0


class Copies(torch.nn.Module):
    """A model certain that the answer repeats the user's last turn word for word: after
    ``<sentinel>`` it predicts that turn's tokens, then ``<eos>``."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        self.inner, self.config = model, model.config
        self.sentinel = special_id(tokenizer, SENTINEL)
        self.user = special_id(tokenizer, SPEAKER_TOKENS["user"])
        self.eos = tokenizer.eos_token_id

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        out = self.inner(input_ids, **kwargs)
        for b, row in enumerate(input_ids.tolist()):
            if self.sentinel not in row:
                continue
            at = row.index(self.sentinel)
            users = [i for i in range(at) if row[i] == self.user]
            if not users:  # a sampled token, not a prompt
                continue
            turn = row[users[-1] + 1 : at]
            for position in range(at, len(row)):  # position predicts the token after it
                step = position - at
                out.logits[b, position, turn[step] if step < len(turn) else self.eos] += 100.0
        return out


@pytest.mark.django_db
def test_hits_at_1_is_1_for_a_model_certain_of_the_true_next_turn(artifacts: None) -> None:
    version = tiny_model()
    records = [*contexts(24), *contexts(26)[24:]]  # 26 contexts, the last two without a reference
    for record in records[24:]:
        del record["reference"]
    chosen = evaluation_set_import(name="ranking", records=parse_objects(records)).evaluation_set
    plain = evaluation_runs.hits_at_1(
        list(chosen.contexts.all()), inference.scorer_for(version), seed_key=chosen.sha256
    )
    _loaded_as(version, lambda s: Copies(s.model, s.tokenizer))

    evaluation = evaluate(chosen, version)

    metrics = evaluation.metrics
    assert (metrics["hits_at_1"], metrics["hits_candidates"], metrics["hits_contexts"]) == (1.0, 20, 24)
    assert 0 <= plain["hits_at_1"] <= 1  # an ordinary model: whatever its likelihood says
    assert (plain["hits_candidates"], plain["hits_contexts"]) == (20, 24)
    # The 19 others are drawn from the set's other references, the same for every version.
    again = evaluation_runs.hits_at_1(
        list(chosen.contexts.all()), inference.scorer_for(version), seed_key=chosen.sha256
    )
    assert again == {key: metrics[key] for key in again}


# --- recovery ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_evaluation_whose_worker_is_gone_is_queued_again_or_failed_when_out_of_attempts(
    sent: list[dict[str, Any]], django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    version = ModelVersion.objects.create(name="v1", directory="models/v1", tokenizer_sha256="t" * 64)
    lost = Evaluation.objects.create(
        evaluation_set=evaluation_set(2, name="a"),
        model_version=version,
        status="running",
        attempts=1,
        worker="nohost:1",
    )
    spent = Evaluation.objects.create(
        evaluation_set=evaluation_set(2, name="b"),
        model_version=version,
        status="running",
        attempts=settings.TRAINING_MAX_ATTEMPTS,
        worker="nohost:2",
    )

    with django_capture_on_commit_callbacks(execute=True):
        recovered = evaluation_runs.evaluation_recover()

    assert {e.pk for e in recovered} == {lost.pk, spent.pk}
    lost.refresh_from_db()
    spent.refresh_from_db()
    assert lost.status == "pending"
    assert spent.status == "failed"
    assert "was lost; out of attempts" in spent.error
    assert [call["args"] for call in sent] == [(lost.pk,)]


# --- through the API, on a real worker ----------------------------------------------------------


def wait_for(condition: Callable[[], Any], timeout: float = 180, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_a_researcher_evaluates_a_version_through_the_api_on_a_real_worker(
    training_worker: subprocess.Popen, users: dict[Any, Any]
) -> None:
    version = tiny_model()
    chosen = evaluation_set(5)
    client = APIClient()
    client.force_login(users["researcher"])

    answer = client.post(
        "/api/v1/evaluations/", {"evaluation_set": chosen.pk, "model_version": version.name}, format="json"
    )
    assert answer.status_code == 202, answer.content
    body = answer.json()
    assert (body["status"], body["done"], body["total"], body["model_version"]) == (
        "pending",
        0,
        5,
        version.name,
    )

    def finished() -> dict[str, Any] | None:
        state = client.get(f"/api/v1/evaluations/{body['id']}/").json()
        return state if state["status"] in ("done", "failed") else None

    done = wait_for(finished, what="the evaluation")
    assert done["status"] == "done", done["error"] + training_worker.log.read_text()[-3000:]
    assert (done["done"], done["total"], done["progress"]) == (5, 5, 1.0)
    assert set(done["metrics"]) == {
        "discriminators",
        "hits_at_1",
        "hits_candidates",
        "hits_contexts",
        "validation_loss",
        "contexts_per_second",
        "fallbacks",
    }
    assert done["metrics"]["hits_contexts"] == 5
    json.dumps(done["metrics"])
    assert (
        EvaluationResponse.objects.filter(context__evaluation_set=chosen, responder=version.name).count() == 5
    )
    listed = client.get("/api/v1/evaluations/", {"model_version": version.name}).json()
    assert [e["id"] for e in listed["results"]] == [body["id"]]
    assert client.get("/api/v1/evaluations/", {"evaluation_set": chosen.pk + 1}).json()["results"] == []


@pytest.mark.django_db
def test_evaluation_response_dialogs_are_answers_to_a_test(artifacts: None) -> None:
    """What the held-out rule keys on: an answer's dialog has the evaluation source."""
    version = tiny_model()
    evaluation = evaluate(evaluation_set(2, references=False), version)
    assert {r.turn.dialog.source for r in answers(evaluation).values()} == {
        evaluation_responses.EVALUATION_SOURCE
    }
