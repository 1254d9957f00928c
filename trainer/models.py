"""Datasets, training jobs and model versions, with their lineage (DESIGN.md data model).

Files live under ``ARTIFACTS_DIR``; rows keep paths relative to it (``directory``), so the folder
can move. A ``DatasetVersion`` and a ``ModelVersion`` never change once ready.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models import Campaign


class DatasetVersion(models.Model):
    class Kind(models.TextChoices):
        PRETRAIN = "pretrain", "Pre-training (generative, from dialogs)"
        QUALITY_SAFETY = "quality_safety", "Quality and safety (discriminators + filtered generation)"
        GROUNDEDNESS = "groundedness", "Groundedness (research formats, from rewrites)"
        FILTERED = "filtered", "Filtered pre-training dialogs (generative, kept by the discriminators)"
        PREFERENCE = "preference", "Preference (chosen/rejected pairs and KTO rows, from crowd work)"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    campaigns = models.ManyToManyField(Campaign, blank=True, related_name="dataset_versions")
    # The model version whose tokenizer renders input_ids; null: a tokenizer is trained on the dialogs.
    tokenizer_source = models.ForeignKey(
        "ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    filters = models.JSONField(default=dict, blank=True)
    validation_percent = models.PositiveSmallIntegerField(default=10)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    directory = models.CharField(max_length=300, blank=True)
    files = models.JSONField(default=dict, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, help_text="sha256 of manifest.json")
    tokenizer_sha256 = models.CharField(max_length=64, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # Who builds it: "host:pid" of the worker process, when it last said it is alive, and how many
    # times a build was started (a build whose worker died is started again, as training jobs are).
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("export_datasetversion", "Can export datasets")]

    def __str__(self) -> str:
        return f"dataset {self.pk} ({self.kind}, {self.status})"

    @property
    def path(self) -> Path:
        return settings.ARTIFACTS_DIR / self.directory


class ModelVersion(models.Model):
    class Kind(models.TextChoices):
        TRAINED = "trained", "Trained here (a Groundwork model)"
        IMPORTED = "imported", "Imported (a transformers causal language model from a local folder)"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TRAINED)
    # An imported version: the folder it was copied from (its files now live under ``directory``).
    source = models.CharField(max_length=500, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    job = models.OneToOneField(
        "TrainingJob", null=True, blank=True, on_delete=models.PROTECT, related_name="model_version"
    )
    directory = models.CharField(max_length=300, help_text="Weights, config and tokenizer (save_pretrained).")
    config = models.JSONField(default=dict, blank=True)
    parameters = models.PositiveBigIntegerField(default=0)
    tokenizer_sha256 = models.CharField(max_length=64)
    metrics = models.JSONField(default=dict, blank=True)
    # Where the job that made it trained ("cpu", "cuda" …, with the world size) and in which
    # precision ("fp32", "bf16"); blank for an imported version.
    device = models.CharField(max_length=100, blank=True)
    precision = models.CharField(max_length=16, blank=True)
    serving = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("serve_modelversion", "Can choose the serving model")]
        constraints = [
            models.UniqueConstraint(
                fields=["serving"], condition=Q(serving=True), name="trainer_one_serving_model"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def path(self) -> Path:
        return settings.ARTIFACTS_DIR / self.directory


class TrainingJob(models.Model):
    class Kind(models.TextChoices):
        PRETRAIN = "pretrain", "Pre-train (a new model)"
        FINETUNE_QUALITY_SAFETY = "finetune_quality_safety", "Fine-tune: quality and safety"
        FINETUNE_GROUNDEDNESS = "finetune_groundedness", "Fine-tune: groundedness"
        FINETUNE_PREFERENCE = "finetune_preference", "Fine-tune: preferences (DPO)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kind = models.CharField(max_length=24, choices=Kind.choices)
    status = models.CharField(max_length=9, choices=Status.choices, default=Status.QUEUED, db_index=True)
    base_model = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="training_jobs"
    )
    datasets = models.ManyToManyField(DatasetVersion, related_name="training_jobs")
    # steps, learning_rate, batch_size, checkpoint_every, seed, max_attempts; model sizes for pretrain.
    hyperparameters = models.JSONField(default=dict, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    loss = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    # Tokens per second over the whole run so far (tokens_per_second is the latest interval's).
    average_tokens_per_second = models.FloatField(null=True, blank=True)
    # Where it trains and in which precision, decided on the worker when the run starts.
    device = models.CharField(max_length=100, blank=True)
    precision = models.CharField(max_length=16, blank=True)
    # [[step, train loss], ...] for the loss curve; validation points in metrics.
    history = models.JSONField(default=list, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Who runs it now: "host:pid" of the worker process, and when it last reported.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    checkpoint_step = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("run_trainingjob", "Can start and cancel training jobs")]

    def __str__(self) -> str:
        return f"training job {self.pk} ({self.kind}, {self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def checkpoint_dir(self) -> Path:
        return settings.ARTIFACTS_DIR / "training" / str(self.pk)


class Evaluation(models.Model):
    """A model version answering every context of an evaluation set (on a worker, batched, exactly
    as it answers chats); the answers are ``dialogs.EvaluationResponse`` rows whose ``responder`` is
    the version's name, rated blind in the set's campaigns. One per (set, version).

    ``metrics`` holds what the worker measures without raters, for the report beside the human
    metrics: ``{"discriminators": {attribute: mean predicted probability over the answers},
    "hits_at_1": float, "hits_candidates": 20, "hits_contexts": int, "validation_loss": float | None,
    "contexts_per_second": float, "fallbacks": int}``. The discriminators' attributes are the
    ranked ones, ``SENSIBLE``, ``SPECIFIC``, ``INTERESTING``, ``UNSAFE``: P(attribute = 1) of the
    chosen candidate, averaged over the answers that are not fallback replies (``{}`` for a version
    without discriminators). ``hits_at_1`` is None (``hits_candidates`` and ``hits_contexts`` 0)
    when the set has fewer than two different references (``trainer.services.evaluation_runs``).
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    evaluation_set = models.ForeignKey(
        "dialogs.EvaluationSet", on_delete=models.PROTECT, related_name="evaluations"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="evaluations")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    # Who runs it, when it last said it is alive, how many times it was started (as dataset builds).
    worker = models.CharField(max_length=200, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["evaluation_set", "model_version"], name="evaluation_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.model_version} on {self.evaluation_set}"
