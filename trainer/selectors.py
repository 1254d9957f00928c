"""Reads of the trainer used by more than one caller: the serving model and model lineage.

A model version's lineage is its chain of parents up to the root. The model loader (what a
version can do follows from the jobs in its lineage), the admin's model page and the API's model
list all read it here, in a number of queries that does not grow with the chain's length: the
ancestors come in one recursive query (``WITH RECURSIVE``, on PostgreSQL and SQLite alike).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import Prefetch, prefetch_related_objects
from django.db.models.expressions import RawSQL

from trainer import sizing
from trainer.hyperparameters import Hyperparameters
from trainer.models import DatasetVersion, ModelVersion, TrainingJob


def serving_model() -> ModelVersion | None:
    return ModelVersion.objects.filter(serving=True).first()


def _ancestor_ids_sql(count: int) -> str:
    """The ids of the given versions (``count`` parameters) and of all their ancestors."""
    table = connection.ops.quote_name(ModelVersion._meta.db_table)
    placeholders = ", ".join(["%s"] * count)
    # UNION (not UNION ALL) keeps each id once, so even a cycle of parents would end.
    return f"""
        WITH RECURSIVE lineage(id) AS (
            SELECT id FROM {table} WHERE id IN ({placeholders})
            UNION
            SELECT version.parent_id FROM {table} version JOIN lineage ON version.id = lineage.id
            WHERE version.parent_id IS NOT NULL
        )
        SELECT id FROM lineage"""  # noqa: S608 - the table's name from the model; ids are parameters


def ancestors(versions: Iterable[ModelVersion]) -> dict[int, list[ModelVersion]]:
    """Each version's ancestors, its parent first and the root last, each with its job: one
    query for any number of versions and any depth (none when no version has a parent)."""
    versions = list(versions)
    parents = sorted({v.parent_id for v in versions if v.parent_id is not None})
    found: dict[int, ModelVersion] = {}
    if parents:
        ids = RawSQL(_ancestor_ids_sql(len(parents)), parents)  # noqa: S611 - ids are parameters
        found = {v.pk: v for v in ModelVersion.objects.filter(pk__in=ids).select_related("job").order_by()}
    chains: dict[int, list[ModelVersion]] = {}
    for version in versions:
        chain: list[ModelVersion] = []
        seen = {version.pk}
        parent = found.get(version.parent_id) if version.parent_id is not None else None
        while parent is not None and parent.pk not in seen:
            seen.add(parent.pk)
            chain.append(parent)
            parent = found.get(parent.parent_id) if parent.parent_id is not None else None
        chains[version.pk] = chain
    return chains


def lineage(version: ModelVersion) -> list[ModelVersion]:
    """The version and its ancestors up to the root, each with its job, the job's datasets (by
    id) and their campaigns: the same few queries whatever the depth."""
    chain = [version, *ancestors([version])[version.pk]]
    jobs = [v.job for v in chain if v.job_id is not None]
    datasets = DatasetVersion.objects.order_by("pk").prefetch_related("campaigns")
    prefetch_related_objects(jobs, Prefetch("datasets", queryset=datasets))
    return chain


def lineage_kinds(version: ModelVersion) -> set[str]:
    """The kinds of the training jobs that made ``version`` and its ancestors: what it can do
    (discriminators after ``finetune_quality_safety``, research after ``finetune_groundedness``)."""
    chain = [version, *ancestors([version])[version.pk]]
    return {v.job.kind for v in chain if v.job_id is not None}


def quality_safety_data(version: ModelVersion) -> tuple[ModelVersion | None, list[DatasetVersion]]:
    """Where ``version``'s discriminators come from: the nearest version of its lineage (itself
    first) made by a ``finetune_quality_safety`` job, and the datasets that job trained on (by
    id); ``(None, [])`` when no such job is in the lineage (a pre-trained model)."""
    for ancestor in lineage(version):
        job = ancestor.job
        if job is not None and job.kind == TrainingJob.Kind.FINETUNE_QUALITY_SAFETY:
            return ancestor, list(job.datasets.all())
    return None, []


def job_size(job: TrainingJob) -> dict[str, Any] | None:
    """What the job page and the API say of the size of ``job``'s model (``trainer.sizing``):

    ``preset`` (the name the job chose, or None), ``parameters`` (``parameters_exact``: counted on
    the model the job made, or its base's, rather than computed from the sizes), the training
    ``flops_per_token`` at its ``max_length``, and ``memory``, the estimated bytes of a step of
    ``batch_size × max_length`` tokens (``sizing.training_memory``) in the job's ``precision``
    (fp32 until a worker has decided, unless the job asks for bf16).

    The sizes are those of the model the job made, else of its base model, else (a pretrain job
    not yet done) its ``model`` sizes over GroundworkConfig's defaults with its first dataset's
    vocabulary size. None when they are not known (a base model whose config names no width, depth
    or heads), with ``parameters`` alone when the base's count is. Reads ``job.datasets`` (prefetch
    them for a list), ``job.model_version`` and ``job.base_model``.
    """
    hp = job.hyperparameters if isinstance(job.hyperparameters, dict) else {}
    version = _made_by(job)
    parameters = 0
    if version is not None:
        config, parameters = version.config, version.parameters
    elif job.base_model is not None:
        config, parameters = job.base_model.config, job.base_model.parameters
    else:
        datasets = sorted(job.datasets.all(), key=lambda dataset: dataset.pk)
        vocab_size = (datasets[0].filters or {}).get("vocab_size") if datasets else None
        config = {**sizing.DEFAULTS, **(hp.get("model") or {})}
        if vocab_size:
            config["vocab_size"] = vocab_size
    defaults = Hyperparameters()
    batch_size = int(hp.get("batch_size") or defaults.batch_size)
    max_length = int(hp.get("max_length") or defaults.max_length)
    precision = job.precision or ("bf16" if hp.get("bf16") is True else "fp32")
    if precision not in sizing.PRECISION_BYTES:
        precision = "fp32"
    try:
        sizes = sizing.ModelSizes.of(config if isinstance(config, dict) else {})
    except (TypeError, ValueError):
        sizes = None
    known = {
        "preset": hp.get("preset") or None,
        "parameters": parameters or (sizing.parameter_count(sizes) if sizes else None),
        "parameters_exact": bool(parameters),
        "batch_size": batch_size,
        "max_length": max_length,
        "precision": precision,
        "precision_decided": bool(job.precision),
    }
    if sizes is None:
        return {**known, "flops_per_token": None, "memory": None} if parameters else None
    memory = sizing.training_memory(
        sizes, batch_size=batch_size, seq_len=max_length, precision=precision, parameters=parameters or None
    )
    return {**known, "flops_per_token": sizing.flops_per_token(sizes, max_length), "memory": memory.as_dict()}


def _made_by(job: TrainingJob) -> ModelVersion | None:
    try:
        return job.model_version
    except ModelVersion.DoesNotExist:
        return None
