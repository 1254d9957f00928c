"""Building a dataset, in a Celery worker (``trainer.tasks.dataset_build_task``).

``dataset_build`` claims the queued dataset, streams its examples (``trainer.sources``) rendered
with the tokenizer (``trainer.formats``) into JSONL and Parquet (``trainer.records``), and writes
the manifest. On any error the dataset is ``failed`` with the cause and its folder removed. A
build whose worker died is taken over: by the redelivered message (``_dataset_claim``) or, when
the whole worker died, by ``dataset_recover`` when a worker starts.
"""

from __future__ import annotations

import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from annotation import rules
from annotation import selectors as annotation_selectors
from annotation.models import Campaign
from annotation.services.consensus import campaign_aggregate
from trainer import causal_lm, devices, formats, records, sampling, sources
from trainer import tokenizer as tokenizers
from trainer.models import DatasetVersion
from trainer.services import preference_builds
from trainer.services.requests import FROM_DIALOGS, TrainerError, dataset_enqueue
from trainer.services.workers import heartbeat, job_claim, job_fail, job_recover, this_worker

PROGRESS_EVERY_SECONDS = 1.0
MAX_SCORED_TOKENS = 512  # a long dialog's context is cut from the left for scoring
# Kinds made from campaigns' labels: their consensus is brought up to date before the build.
FROM_CAMPAIGNS = (
    DatasetVersion.Kind.QUALITY_SAFETY,
    DatasetVersion.Kind.GROUNDEDNESS,
    DatasetVersion.Kind.PREFERENCE,
)


def dataset_build(*, dataset_id: int) -> DatasetVersion:
    """Build a queued dataset (the worker's task body): stream the examples into JSONL and
    Parquet, then write the manifest. On any error the dataset is ``failed`` with the cause and
    its folder is removed; nothing half-written stays."""
    worker = this_worker()
    dataset = _dataset_claim(dataset_id, worker)
    if dataset is None:
        return DatasetVersion.objects.get(pk=dataset_id)
    directory = dataset.path
    shutil.rmtree(directory, ignore_errors=True)
    try:
        with heartbeat(DatasetVersion, dataset.pk):
            manifest = _dataset_write(dataset, directory)
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        job_fail(dataset, f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, TrainerError):
            raise
        dataset.refresh_from_db()
        return dataset
    manifest_path = directory / "manifest.json"
    manifest_sha256 = records.sha256_of(manifest_path)
    DatasetVersion.objects.filter(pk=dataset.pk).update(
        status=DatasetVersion.Status.READY,
        files={
            **manifest["files"],
            "manifest.json": {"sha256": manifest_sha256, "bytes": manifest_path.stat().st_size},
        },
        sha256=manifest_sha256,
        tokenizer_sha256=manifest["tokenizer"]["sha256"],
        counts={
            "splits": manifest["counts"],
            "label_balance": manifest["label_balance"],
            "skipped": manifest["skipped"],
        },
        finished_at=timezone.now(),
    )
    dataset.refresh_from_db()
    return dataset


def _dataset_claim(dataset_id: int, worker: str) -> DatasetVersion | None:
    """Take the dataset for ``worker`` (``job_claim``); a build taken over starts anew."""
    return job_claim(
        DatasetVersion.objects.all(),
        dataset_id,
        worker,
        finished=(DatasetVersion.Status.READY, DatasetVersion.Status.FAILED),
        doing="building",
        directory=f"datasets/{dataset_id}",
        done=0,
    )


def dataset_failed(*, dataset_id: int, error: str) -> None:
    """Mark a build whose task raised as failed with the cause, unless it ended meanwhile (the
    safety net of ``dataset_build_task``: ``dataset_build`` records its own failures first)."""
    DatasetVersion.objects.filter(
        pk=dataset_id, status__in=[DatasetVersion.Status.PENDING, DatasetVersion.Status.RUNNING]
    ).update(status=DatasetVersion.Status.FAILED, error=error, finished_at=timezone.now())


def dataset_recover() -> list[DatasetVersion]:
    """Builds marked running whose worker is gone: queue them again (they start from scratch) or
    fail them when out of attempts. Run when a worker starts, as ``training_recover``."""
    return job_recover(DatasetVersion, doing="building", enqueue=dataset_enqueue)


# --- writing the files --------------------------------------------------------------------------


def _dataset_sources(
    dataset: DatasetVersion, campaigns: list[Campaign]
) -> tuple[int, Iterable[sources.Source], int]:
    """How many sources the dataset is made of (its progress bar's end), the sources, and how many
    were held out for evaluation (``sources.held_out_dialogs``)."""
    purposes = dataset.filters.get("purposes") or ()
    if dataset.kind in FROM_DIALOGS:
        model_versions = dataset.filters.get("model_versions") or ()
        dialogs = sources.pretrain_dialogs(purposes, model_versions)
        held_out = sources.pretrain_held_out(purposes, model_versions)
        documents = _documents(dataset)
        return (
            dialogs.count() + sources.pretrain_documents(documents).count(),
            itertools.chain(
                sources.pretrain_sources(purposes, model_versions), sources.document_sources(documents)
            ),
            held_out,
        )
    if dataset.kind == DatasetVersion.Kind.QUALITY_SAFETY:
        labelled = annotation_selectors.labelled_items(campaigns=campaigns)
        return (
            sources.without_held_out(labelled).count(),
            sources.quality_safety_sources(campaigns),
            sources.held_out_items(labelled).count(),
        )
    rewritten = annotation_selectors.rewritten_items(campaigns=campaigns)
    return (
        sources.without_held_out(rewritten).count(),
        sources.groundedness_sources(campaigns),
        sources.held_out_items(rewritten).count(),
    )


def _documents(dataset: DatasetVersion) -> int | None:
    """How many documents the dataset takes (``filters.documents``: absent or 0 none, null all)."""
    return dataset.filters.get("documents", 0) if dataset.kind == DatasetVersion.Kind.PRETRAIN else 0


def _render(tokenizer: Any, pending: sources.Pending) -> formats.Example:
    if pending.kind == "document":
        return formats.document(tokenizer, pending.title, pending.response)
    if pending.kind == "generative":
        return formats.generative(tokenizer, pending.context, pending.response)
    if pending.kind == "discriminative":
        assert pending.attribute is not None
        assert pending.label is not None
        return formats.discriminative(
            tokenizer, pending.context, pending.response, pending.attribute, pending.label
        )
    assert pending.outcome is not None
    if pending.kind == "research_query":
        return formats.research_first(tokenizer, pending.context, pending.response, pending.outcome)
    return formats.research_step(
        tokenizer, pending.context, pending.response, pending.research, pending.outcome
    )


def _row(tokenizer: Any, pending: sources.Pending, split: str, dialog: str) -> dict[str, Any]:
    example = _render(tokenizer, pending)
    return {
        "id": pending.key,
        "split": split,
        "kind": pending.kind,
        "attribute": pending.attribute,
        "label": pending.label,
        "soft_label": pending.soft_label,
        "dialog": dialog,
        "context": [{"speaker": s, "text": t} for s, t in pending.context],
        "response": pending.response,
        "research": [step._asdict() for step in pending.research],
        "outcome_speaker": pending.outcome[0] if pending.outcome else None,
        "outcome": pending.outcome[1] if pending.outcome else None,
        "text": tokenizer.decode(example.ids),
        "input_ids": example.ids,
        "loss_mask": example.loss_mask,
    }


def _dataset_write(dataset: DatasetVersion, directory: Path) -> dict[str, Any]:
    campaigns = list(dataset.campaigns.order_by("pk"))
    tokenizer_dir = directory / "tokenizer"
    if dataset.tokenizer_source is not None:
        tokenizer = tokenizers.load(dataset.tokenizer_source.path)
    else:
        texts = sources.pretrain_texts(dataset.filters.get("purposes") or (), _documents(dataset))
        tokenizer = tokenizers.train_tokenizer(
            texts, vocab_size=int(dataset.filters.get("vocab_size") or 8192)
        )
    tokenizers.save(tokenizer, tokenizer_dir)

    if dataset.kind in FROM_CAMPAIGNS:
        # The labels as the judgments stand now: an item whose consensus task was never queued
        # (the broker was down when its last judgment came) is labelled here.
        for campaign in campaigns:
            campaign_aggregate(campaign=campaign)
    common = _manifest_common(dataset, campaigns, tokenizer, tokenizer_dir)
    if dataset.kind == DatasetVersion.Kind.PREFERENCE:
        return _manifest_write(
            directory,
            {
                **common,
                **preference_builds.preference_write(dataset, directory, campaigns, _progress(dataset)),
            },
        )
    total, units, held_out = _dataset_sources(dataset, campaigns)
    DatasetVersion.objects.filter(pk=dataset.pk).update(total=total)
    counts: dict[str, dict[str, int]] = {split: {} for split in records.SPLITS}
    balance: dict[str, dict[str, int]] = {}
    skipped = {"sources_without_examples": 0, sources.HELD_OUT: held_out}
    done = 0
    progress = _progress(dataset)
    keep = _DiscriminatorFilter(dataset, tokenizer) if dataset.kind == DatasetVersion.Kind.FILTERED else None
    with records.DatasetWriter(directory) as writer:
        for source in units:
            split = source.split or records.split_of(source.dialog, dataset.validation_percent)
            if not source.examples:
                skipped["sources_without_examples"] += 1
            for reason, count in source.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
            for pending in keep(source.examples) if keep else source.examples:
                writer.add(_row(tokenizer, pending, split, source.dialog))
                counts[split][pending.kind] = counts[split].get(pending.kind, 0) + 1
                if pending.attribute is not None:
                    side = balance.setdefault(pending.attribute, {"0": 0, "1": 0})
                    side[str(pending.label)] += 1
            done += 1
            progress(done, False)
    progress(done, True)
    if not any(counts[split] for split in records.SPLITS):
        raise TrainerError(
            "the chosen sources give no examples "
            "(no consensus labels, no researched rewrites or no dialogs yet)"
        )
    manifest = {
        **common,
        "format": formats.describe(),
        "counts": counts,
        "label_balance": balance,
        "skipped": skipped,
        "files": writer.files(),
    }
    if keep is not None:
        manifest["filter"] = keep.report
    return _manifest_write(directory, manifest)


def _manifest_common(
    dataset: DatasetVersion, campaigns: list[Campaign], tokenizer: Any, tokenizer_dir: Path
) -> dict[str, Any]:
    """What every kind's manifest says: versions, tokenizer, source campaigns, filters, split."""
    # Incomplete items (fewer judgments than their campaign's raters) have no labels, so they give no
    # quality_safety examples: counted per source campaign in the manifest.
    completeness = annotation_selectors.campaigns_completeness(campaigns=campaigns)
    aggregations = annotation_selectors.campaigns_label_aggregations(campaigns=campaigns)
    return {
        "kind": dataset.kind,
        "rules_version": rules.RULES_VERSION,
        "tokenizer": {
            "source_model": dataset.tokenizer_source.name if dataset.tokenizer_source else None,
            "trained_on": None
            if dataset.tokenizer_source
            else "the dataset's dialogs" + (" and documents" if _documents(dataset) != 0 else ""),
            "vocab_size": len(tokenizer),
            "sha256": tokenizer_sha256(tokenizer_dir),
        },
        "source_campaigns": [
            {
                "id": c.pk,
                "name": c.name,
                "kind": c.kind,
                "raters_per_item": c.raters_per_item,
                # Items decided before their last rater are complete at the raters they had (their
                # hard labels are the full panel's; annotation.decided).
                "stop_when_decided": c.stop_when_decided,
                "complete_items": completeness[c.pk].complete,
                "incomplete_items": completeness[c.pk].incomplete,
                "label_aggregation": aggregations[c.pk],
            }
            for c in campaigns
        ],
        "filters": dataset.filters,
        "validation_percent": dataset.validation_percent,
        "split_by": "dialog (sha256 of its id)",
    }


def _manifest_write(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    return manifest


def _progress(dataset: DatasetVersion) -> Callable[[int, bool], None]:
    """``progress(done, force)``: the build's progress, written at most every
    ``PROGRESS_EVERY_SECONDS`` unless forced."""
    last = [0.0]

    def progress(done: int, force: bool) -> None:
        now = time.monotonic()
        if force or now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            DatasetVersion.objects.filter(pk=dataset.pk).update(done=done)

    return progress


def tokenizer_sha256(directory: Path) -> str:
    """What identifies a tokenizer saved in ``directory`` (a dataset's, a model version's)."""
    return records.sha256_of(directory / "tokenizer.json")


class _DiscriminatorFilter:
    """Keeps the generative examples the model's discriminators rate at or above every threshold
    (scored on the device ``settings.INFERENCE_DEVICE`` chooses);
    ``report`` counts what was scored, kept and dropped (by the first threshold missed)."""

    ORDER = (
        ("safe", "UNSAFE"),
        ("sensible", "SENSIBLE"),
        ("specific", "SPECIFIC"),
        ("interesting", "INTERESTING"),
    )

    def __init__(self, dataset: DatasetVersion, tokenizer: Any) -> None:
        assert dataset.tokenizer_source is not None
        device = devices.choose(settings.INFERENCE_DEVICE, name="INFERENCE_DEVICE")
        devices.prepare(device)
        model = causal_lm.load(dataset.tokenizer_source.path, tokenizer).to(device)
        self.scorer = sampling.Scorer(model, tokenizer, discriminators=True)
        self.attributes = sampling.RANKED_ATTRIBUTES
        self.thresholds = dataset.filters["thresholds"]
        self.report: dict[str, Any] = {
            "model": dataset.tokenizer_source.name,
            "thresholds": self.thresholds,
            "scored": 0,
            "kept": 0,
            "dropped": {name: 0 for name, _ in self.ORDER},
        }

    def __call__(self, examples: list[sources.Pending]) -> list[sources.Pending]:
        if not examples:
            return []
        prefixes = [
            formats.render_for_scoring(self.scorer.tokenizer, e.context, e.response)[-MAX_SCORED_TOKENS:]
            for e in examples
        ]
        scores = self.scorer.score_by_reencoding([], prefixes, self.attributes)
        kept = []
        for i, example in enumerate(examples):
            self.report["scored"] += 1
            probability = {name: scores[attribute][i] for name, attribute in self.ORDER}
            probability["safe"] = 1 - probability["safe"]  # P(UNSAFE = 0)
            missed = next((name for name, _ in self.ORDER if probability[name] < self.thresholds[name]), None)
            if missed is None:
                self.report["kept"] += 1
                kept.append(example)
            else:
                self.report["dropped"][missed] += 1
        return kept
