"""Running an evaluation, in a Celery worker (``trainer.tasks.evaluation_run_task``).

``evaluation_run`` claims the evaluation (as dataset builds are claimed: worker, heartbeat,
attempts) and has its model version answer every context of the set that it has not answered yet,
so a run that was stopped resumes without answering a context twice. The answers are made exactly
as chat answers are (``trainer.inference``: sample-and-rank with the same settings, discriminator
ranking for a fine-tuned version, the research loop for a grounded one, the safe fallback reply
when every candidate is unsafe), only several contexts per model call
(``Scorer.respond_batch``): contexts sorted by prompt length, at most ``EVALUATION_BATCH_CONTEXTS``
a batch and ``EVALUATION_BATCH_TOKENS`` rows × tokens. Each answer is stored with
``dialogs.evaluation_responses.evaluation_response_add``, credited to the version, a batch's
answers and its progress (``done``) in one transaction. Then the metrics measured without raters
go into ``Evaluation.metrics``, and the set's responses go to its rating campaigns (annotation's
``evaluation_responses_enqueue``).

A run whose worker died is taken over: by the redelivered message (``_evaluation_claim``) or, when
the whole worker died, by ``evaluation_recover`` when a worker starts; either way it resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation.services.evaluations import evaluation_responses_enqueue
from dialogs.evaluation_responses import EvaluationResponseExists, evaluation_response_add
from dialogs.models import Candidate, EvaluationContext, EvaluationResponse, EvaluationSet
from trainer import hits, inference, sampling, selectors
from trainer.models import Evaluation, ModelVersion, TrainingJob
from trainer.services.evaluations import evaluation_enqueue
from trainer.services.workers import heartbeat, job_claim, job_fail, job_recover, this_worker

logger = logging.getLogger(__name__)


def evaluation_run(
    *, evaluation_id: int, batch_contexts: int | None = None, seed: int | None = None
) -> Evaluation:
    """Answer the evaluation's contexts not answered yet, measure, and mark it done (the worker's
    task body). ``batch_contexts`` caps the contexts per model call (default
    ``EVALUATION_BATCH_CONTEXTS``; 1: one context at a time); with ``seed``, the same contexts
    answered in the same batches give the same answers. On any error the evaluation is ``failed``
    with the cause (what was answered stays; a new request resumes it) and the error is raised."""
    evaluation = _evaluation_claim(evaluation_id, this_worker())
    if evaluation is None:
        return Evaluation.objects.get(pk=evaluation_id)
    try:
        with heartbeat(Evaluation, evaluation.pk):
            metrics = _evaluation_answer(evaluation, batch_contexts, seed)
    except Exception as exc:
        job_fail(evaluation, f"{type(exc).__name__}: {exc}")
        raise
    Evaluation.objects.filter(pk=evaluation.pk).update(
        status=Evaluation.Status.DONE, metrics=metrics, finished_at=timezone.now()
    )
    evaluation.refresh_from_db()
    logger.info("%s: done, %s", evaluation, metrics)
    evaluation_responses_enqueue(evaluation_set=evaluation.evaluation_set)  # the set's rating campaigns
    return evaluation


def _evaluation_claim(evaluation_id: int, worker: str) -> Evaluation | None:
    """Take the evaluation for ``worker`` (``job_claim``); one taken over resumes."""
    return job_claim(
        Evaluation.objects.select_related("evaluation_set", "model_version"),
        evaluation_id,
        worker,
        finished=(Evaluation.Status.DONE, Evaluation.Status.FAILED),
        doing="running",
    )


def evaluation_failed(*, evaluation_id: int, error: str) -> None:
    """Mark an evaluation whose task raised as failed with the cause, unless it ended meanwhile
    (the safety net of ``evaluation_run_task``: ``evaluation_run`` records its own failures)."""
    Evaluation.objects.filter(
        pk=evaluation_id, status__in=[Evaluation.Status.PENDING, Evaluation.Status.RUNNING]
    ).update(status=Evaluation.Status.FAILED, error=error, finished_at=timezone.now())


def evaluation_recover() -> list[Evaluation]:
    """Evaluations marked running whose worker is gone: queued again (they resume) or failed when
    out of attempts. Run when a worker starts, as ``dataset_recover``."""
    return job_recover(Evaluation, doing="running", enqueue=evaluation_enqueue)


# --- answering ----------------------------------------------------------------------------------


def context_of(context: EvaluationContext) -> list[tuple[str, str]]:
    """What the model reads for an evaluation context: its role's preamble, then its turns."""
    turns = [(str(t["speaker"]), str(t["text"])) for t in context.turns]
    return inference.model_context(turns, context.role)


def batches(
    lengths: Sequence[int], *, most: int, budget: int, settings: sampling.Settings
) -> Iterator[list[int]]:
    """Indexes into ``lengths`` (prompt tokens, ascending) in batches of at most ``most``
    contexts whose rows (``candidates`` per context, each prompt + ``max_new_tokens`` wide, the
    widest prompt of the batch) hold at most ``budget`` tokens; always at least one context."""
    batch: list[int] = []
    for index, length in enumerate(lengths):
        width = min(length, settings.max_prompt_tokens) + settings.max_new_tokens
        if batch and (len(batch) >= most or (len(batch) + 1) * settings.candidates * width > budget):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _evaluation_answer(
    evaluation: Evaluation, batch_contexts: int | None, seed: int | None
) -> dict[str, Any]:
    version = evaluation.model_version
    evaluation_set = evaluation.evaluation_set
    scorer = inference.scorer_for(version)
    grounded = TrainingJob.Kind.FINETUNE_GROUNDEDNESS in selectors.lineage_kinds(version)
    sampling_settings = inference.sampling_settings()
    contexts = list(evaluation_set.contexts.select_related("role").order_by("index"))
    answered = set(_responses(evaluation_set, version).values_list("context_id", flat=True))
    done = sum(1 for c in contexts if c.pk in answered)
    Evaluation.objects.filter(pk=evaluation.pk).update(total=len(contexts), done=done)
    # Contexts of like length share a batch (less padding): shortest prompt first.
    most_tokens = sampling_settings.max_prompt_tokens
    pending = sorted(
        (
            (min(len(scorer.prompt(model_context)), most_tokens), c.index, c, model_context)
            for c, model_context in ((c, context_of(c)) for c in contexts if c.pk not in answered)
        ),
        key=lambda p: (p[0], p[1]),
    )
    lengths = [length for length, *_ in pending]
    most = max(1, batch_contexts or settings.EVALUATION_BATCH_CONTEXTS)
    started, answered_now = time.monotonic(), 0
    for number, batch in enumerate(
        batches(lengths, most=most, budget=settings.EVALUATION_BATCH_TOKENS, settings=sampling_settings)
    ):
        chosen = [(pending[i][2], pending[i][3]) for i in batch]
        answers = scorer.respond_batch(
            [model_context for _, model_context in chosen],
            sampling_settings,
            seed=None if seed is None else seed + number,
        )
        replies = [
            (
                context,
                inference.reply_of(
                    answer,
                    scorer=scorer,
                    context=model_context,
                    version=version,
                    grounded=grounded,
                    session=f"evaluation-{evaluation.pk}-context-{context.pk}",
                ),
            )
            for (context, model_context), answer in zip(chosen, answers, strict=True)
        ]
        # A batch's answers are stored together, with the progress: one commit a batch.
        with transaction.atomic():
            for context, reply in replies:
                try:
                    evaluation_response_add(
                        context=context,
                        responder=version.name,
                        text=reply.text,
                        base_text=reply.base_text,
                        research=reply.research,
                        candidates=reply.candidates,
                        fallback=reply.fallback,
                    )
                except EvaluationResponseExists:
                    logger.warning(
                        "%s: context %s was answered meanwhile; kept", evaluation, context.external_id
                    )
            answered_now += len(replies)
            done += len(replies)
            Evaluation.objects.filter(pk=evaluation.pk).update(done=done, heartbeat_at=timezone.now())
    seconds = time.monotonic() - started
    previous = (evaluation.metrics or {}).get("contexts_per_second")
    return {
        "discriminators": _discriminator_means(evaluation_set, version) if scorer.discriminators else {},
        **hits_at_1(contexts, scorer, seed_key=evaluation_set.sha256),
        "validation_loss": ((version.metrics or {}).get("final") or {}).get("validation_loss"),
        "contexts_per_second": round(answered_now / seconds, 4) if answered_now and seconds > 0 else previous,
        "fallbacks": _responses(evaluation_set, version).exclude(turn__fallback="").count(),
    }


def _responses(evaluation_set: EvaluationSet, version: ModelVersion) -> Any:
    return EvaluationResponse.objects.filter(context__evaluation_set=evaluation_set, responder=version.name)


# --- metrics measured without raters ------------------------------------------------------------


def _discriminator_means(evaluation_set: EvaluationSet, version: ModelVersion) -> dict[str, float]:
    """Each ranked attribute's P(attribute = 1), as the version's discriminators predicted it for
    the candidate it chose, averaged over its answers (a fallback reply chose none: not counted)."""
    chosen = Candidate.objects.filter(
        turn__evaluation_response__in=_responses(evaluation_set, version), chosen=True
    ).values_list("scores", flat=True)
    sums = dict.fromkeys(sampling.RANKED_ATTRIBUTES, 0.0)
    count = 0
    for scores in chosen.iterator(chunk_size=2000):
        if all(f"P({name})" in scores for name in sums):
            count += 1
            for name in sums:
                sums[name] += float(scores[f"P({name})"])
    return {name: round(total / count, 4) for name, total in sums.items()} if count else {}


def hits_at_1(
    contexts: Sequence[EvaluationContext], scorer: sampling.Scorer, *, seed_key: str
) -> dict[str, Any]:
    """Held-out response ranking (``hits.hits_at_1``) of the evaluation contexts: each context
    with a reference (its true next turn) is its own group, so the 19 others are drawn from the
    other contexts' references, seeded by ``seed_key`` and the context's id (every version meets
    the same ones), and ranked by the model's mean token log-likelihood after the context."""
    cases = [
        hits.Case(
            key=context.external_id,
            context=context_of(context),
            reference=context.reference,
            group=context.external_id,
        )
        for context in contexts
    ]
    return hits.hits_at_1(cases, scorer.response_log_likelihoods, seed_key=seed_key)
