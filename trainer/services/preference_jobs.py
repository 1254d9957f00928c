"""A ``finetune_preference`` job's training (DPO, ``trainer.preference_training``), inside
``training_jobs.training_run``, which claims the job, loads the base model, handles cancelling and
failures and turns the weights into a model version, as for every job.

The pairs are the ``train`` and ``validation`` pairs of the job's ``preference`` datasets,
rendered with the base model's tokenizer; the reference model is the base model, frozen. The
job's metrics, before (``initial``) and after (``final``): ``validation_loss`` is the DPO loss on
the validation pairs (None without any), and ``preference`` gives, on the training and on the
validation pairs, the DPO loss, the reward accuracy and margin and the log-likelihood margin of
chosen over rejected (``preference_training.preference_metrics``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from django.utils import timezone

from trainer import preference_training, records, training
from trainer.hyperparameters import Hyperparameters
from trainer.models import TrainingJob

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


def preference_pairs(job: TrainingJob, tokenizer: Any) -> dict[str, list[preference_training.PreferencePair]]:
    """The pairs of the job's datasets by split, rendered with ``tokenizer``."""
    found: dict[str, list[preference_training.PreferencePair]] = {split: [] for split in records.SPLITS}
    for dataset in job.datasets.order_by("pk"):
        for split in records.SPLITS:
            for row in records.read_rows(dataset.path, split, PAIR_COLUMNS):
                found[split].append(
                    preference_training.render(
                        tokenizer, row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"]
                    )
                )
    return found


def _evaluation(
    model: Any, reference: Any, pairs: dict[str, list], hp: Hyperparameters, pad_id: int
) -> dict[str, Any]:
    preference = {
        split: preference_training.preference_metrics(model, reference, pairs[split], hp, pad_id=pad_id)
        for split in records.SPLITS
    }
    return {
        "validation_loss": preference["validation"]["dpo_loss"],
        "validation_examples": len(pairs["validation"]),
        "attributes": {},
        "preference": preference,
    }


def preference_train(
    job: TrainingJob,
    hp: Hyperparameters,
    worker: str,
    model: Any,
    tokenizer: Any,
    *,
    report: Callable[[training.Progress], bool],
    on_checkpoint: Callable[[int], None],
    device: torch.device,
) -> dict[str, Any]:
    """Train ``model`` (the base model, in place) by DPO on the job's pairs, on ``device``; the
    job's metrics. ``report`` and ``on_checkpoint`` are ``training_run``'s (the job's row)."""
    pairs = preference_pairs(job, tokenizer)
    if not pairs["train"]:
        raise ValueError("the preference datasets have no training pairs (only validation ones)")
    reference = copy.deepcopy(model).eval()
    pad_id = tokenizer.pad_token_id
    metrics = dict(job.metrics)
    if "initial" not in metrics:
        metrics["initial"] = _evaluation(model, reference, pairs, hp, pad_id)
        TrainingJob.objects.filter(pk=job.pk, worker=worker).update(
            metrics=metrics, heartbeat_at=timezone.now()
        )
    progress = preference_training.train_dpo(
        model,
        reference,
        pairs["train"],
        hp,
        pad_id=pad_id,
        checkpoint_dir=job.checkpoint_dir,
        report=report,
        on_checkpoint=on_checkpoint,
        device=device,
    )
    TrainingJob.objects.filter(pk=job.pk, worker=worker).update(heartbeat_at=timezone.now())
    metrics["final"] = _evaluation(model, reference, pairs, hp, pad_id)
    metrics["train_loss"] = progress.loss
    metrics["tokens_per_second"] = round(progress.tokens_per_second, 1)
    metrics["average_tokens_per_second"] = round(progress.average_tokens_per_second, 1)
    return metrics
