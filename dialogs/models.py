"""Conversations: dialogs, their turns, and the roles (domain-grounding presets) they can play;
evaluation sets, the fixed contexts every model version is judged on."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Speaker(models.TextChoices):
    USER = "user", "User"
    MODEL = "model", "Model"


class Purpose(models.TextChoices):
    QUALITY = "quality", "Quality (SSI)"
    SAFETY = "safety", "Safety"
    GROUNDEDNESS = "groundedness", "Groundedness"
    ROLE = "role", "Role"
    PRETRAIN = "pretrain", "Pre-training"


class Fallback(models.TextChoices):
    """Why a model turn is a canned reply instead of one of the model's candidates."""

    UNSAFE = "unsafe", "Every candidate predicted unsafe"
    EMPTY = "empty", "Every candidate empty"


class Mode(models.TextChoices):
    NATURAL = "natural", "Natural"
    SENSITIVE = "sensitive", "Sensitive topics"
    ADVERSARIAL = "adversarial", "Adversarial"


class Role(models.Model):
    """An application role: the model is preconditioned with ``preamble`` turns (METHOD.md §9)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # [{"speaker": "user"|"model", "text": "..."}], shown to the model before the dialog.
    preamble = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Dialog(models.Model):
    Purpose = Purpose
    Mode = Mode

    # The id the dialog has in JSONL files; stable across export and re-import.
    external_id = models.CharField("id", max_length=200, unique=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, db_index=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.NATURAL)
    role = models.ForeignKey(Role, null=True, blank=True, on_delete=models.PROTECT)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    source = models.CharField(max_length=100, blank=True, db_index=True)
    meta = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(purpose__in=[p.value for p in Purpose]), name="dialog_purpose_valid"
            ),
            models.CheckConstraint(condition=Q(mode__in=[m.value for m in Mode]), name="dialog_mode_valid"),
            models.CheckConstraint(condition=~Q(external_id=""), name="dialog_id_not_empty"),
        ]

    def __str__(self) -> str:
        return self.external_id


class Turn(models.Model):
    Fallback = Fallback

    dialog = models.ForeignKey(Dialog, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    speaker = models.CharField(max_length=8, choices=Speaker.choices)
    text = models.TextField()
    # The model version that wrote this turn (model turns only; blank for human-written turns and
    # for model turns of unknown origin). A name, not a foreign key: dialogs imports no other app
    # (DESIGN.md), and imported dialogs name models this platform never had.
    model_version = models.CharField(max_length=100, blank=True, db_index=True)
    # Set when the model's own text was not sent: the turn is a canned reply (SAFE_FALLBACK_REPLY
    # when every candidate was predicted unsafe). Its candidates are still kept.
    fallback = models.CharField(max_length=8, choices=Fallback.choices, blank=True, db_index=True)
    # For a grounded model turn: the base response before research, and the research trace
    # ([{"query": ..., "snippet": ..., "url": ...}]).
    base_text = models.TextField(blank=True)
    research = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["dialog", "index"]
        constraints = [
            models.UniqueConstraint(fields=["dialog", "index"], name="turn_unique_index"),
            models.CheckConstraint(
                condition=Q(speaker__in=[s.value for s in Speaker]), name="turn_speaker_valid"
            ),
            models.CheckConstraint(condition=~Q(text=""), name="turn_text_not_empty"),
            models.CheckConstraint(
                condition=Q(model_version="") | Q(speaker=Speaker.MODEL.value),
                name="turn_model_version_of_model",
            ),
            models.CheckConstraint(
                condition=Q(fallback="")
                | Q(speaker=Speaker.MODEL.value, fallback__in=[f.value for f in Fallback]),
                name="turn_fallback_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dialog_id}#{self.index} {self.speaker}"


class Candidate(models.Model):
    """One of the responses sampled for a model turn (sample-and-rank, METHOD.md §6)."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="candidates")
    index = models.PositiveSmallIntegerField()
    text = models.TextField()
    # What the ranking saw: log-likelihood, P(sensible), P(unsafe=0)…, by name.
    scores = models.JSONField(default=dict, blank=True)
    chosen = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["turn", "index"]
        constraints = [models.UniqueConstraint(fields=["turn", "index"], name="candidate_unique_index")]

    def __str__(self) -> str:
        return f"{self.turn} candidate {self.index}"


class DialogExport(models.Model):
    """A JSONL export of dialogs, written by a Celery worker under ARTIFACTS_DIR."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    purpose = models.CharField(
        max_length=16, choices=Dialog.Purpose.choices, blank=True, help_text="Blank: all."
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    path = models.CharField(max_length=500, blank=True)
    dialog_count = models.PositiveIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"export #{self.pk} ({self.status})"


# --- evaluation sets (issue 15) -------------------------------------------------------------------


class EvaluationPurpose(models.TextChoices):
    """What a context of an evaluation set tests (a dialog's purposes, less pre-training)."""

    QUALITY = "quality", "Quality (SSI)"
    SAFETY = "safety", "Safety"
    GROUNDEDNESS = "groundedness", "Groundedness"
    ROLE = "role", "Role"


class EvaluationSet(models.Model):
    """A fixed, versioned set of contexts that every model version is judged on.

    Its contexts never change once a model has been evaluated on it (``locked_at``): numbers stay
    comparable. Importing the same name again makes the next ``version``. Every write goes through
    ``dialogs.evaluation_sets``.
    """

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    # Where the contexts came from: the file's name, "api", "dialogs".
    source = models.CharField(max_length=100, blank=True)
    # SHA-256 of the contexts as canonical JSONL, in order: equal sets have equal digests.
    sha256 = models.CharField(max_length=64)
    context_count = models.PositiveIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when a model version is first evaluated on the set; from then on it refuses any change.
    locked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="evaluation_set_unique_version"),
            models.CheckConstraint(condition=Q(version__gte=1), name="evaluation_set_version_positive"),
            models.CheckConstraint(condition=~Q(name=""), name="evaluation_set_name_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def locked(self) -> bool:
        return self.locked_at is not None


class EvaluationContext(models.Model):
    """One context of an evaluation set: the turns a model answers, and what it tests."""

    evaluation_set = models.ForeignKey(EvaluationSet, on_delete=models.CASCADE, related_name="contexts")
    # The context's place in its set (the file's order): reports resample contexts in this order.
    index = models.PositiveIntegerField()
    # The id the context has in the JSONL file, unique within its set.
    external_id = models.CharField("id", max_length=250)
    purpose = models.CharField(max_length=16, choices=EvaluationPurpose.choices)
    role = models.ForeignKey(Role, null=True, blank=True, on_delete=models.PROTECT)
    # [{"speaker": "user"|"model", "text": "..."}], checked as a dialog's turns are.
    turns = models.JSONField()
    # A reference response (the original next turn of a dialog, an expected answer), or blank.
    reference = models.TextField(blank=True)
    # The dialog the context was cut from (evaluation_set_from_dialogs): held out of training.
    source_dialog = models.ForeignKey(
        Dialog, null=True, blank=True, on_delete=models.PROTECT, related_name="evaluation_contexts"
    )

    class Meta:
        ordering = ["evaluation_set", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["evaluation_set", "index"], name="evaluation_context_unique_index"
            ),
            models.UniqueConstraint(
                fields=["evaluation_set", "external_id"], name="evaluation_context_unique_id"
            ),
            models.CheckConstraint(
                condition=Q(purpose__in=[p.value for p in EvaluationPurpose]),
                name="evaluation_context_purpose_valid",
            ),
            models.CheckConstraint(condition=~Q(external_id=""), name="evaluation_context_id_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.evaluation_set} / {self.external_id}"


HUMAN_RESPONDER = "human"  # EvaluationResponse.responder of the human baseline


class EvaluationResponse(models.Model):
    """One responder's answer to one context of an evaluation set: a model version's (``responder``
    is its name) or the human baseline's (``HUMAN_RESPONDER``, a crowdworker wrote it).

    The answer is the last turn of a dialog of its own (``source`` "evaluation": the context's turns,
    then the response), so that rating campaigns take it like any turn, its writer never rates it
    (the dialog's ``created_by``), and no dataset trains on it. Nothing in the dialog says who
    answered but the turn's ``model_version``, which raters never see. Written by
    ``dialogs.evaluation_responses.evaluation_response_add``.
    """

    context = models.ForeignKey(EvaluationContext, on_delete=models.CASCADE, related_name="responses")
    responder = models.CharField(max_length=100)
    turn = models.OneToOneField(Turn, on_delete=models.CASCADE, related_name="evaluation_response")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["context", "responder"]
        constraints = [
            models.UniqueConstraint(fields=["context", "responder"], name="evaluation_response_unique"),
            models.CheckConstraint(
                condition=~Q(responder=""), name="evaluation_response_responder_not_empty"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.context} / {self.responder}"
