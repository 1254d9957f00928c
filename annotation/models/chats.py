"""Chats: crowdworkers talking to the model (METHOD.md §1), their flags on model turns, and which
campaigns a chat's dialogs go to."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from annotation.models.campaigns import Campaign
from dialogs.models import Dialog, EvaluationPurpose, Mode, Purpose, Turn
from dialogs.models import Role as DialogRole


class ChatPurpose(models.TextChoices):
    """The dialog purposes a worker can chat for (``dialogs.models.Purpose`` without pre-training)."""

    QUALITY = Purpose.QUALITY.value, Purpose.QUALITY.label
    SAFETY = Purpose.SAFETY.value, Purpose.SAFETY.label
    GROUNDEDNESS = Purpose.GROUNDEDNESS.value, Purpose.GROUNDEDNESS.label
    ROLE = Purpose.ROLE.value, Purpose.ROLE.label


class Chat(models.Model):
    """A worker's live conversation with the serving model; its turns are those of ``dialog``.

    ``waiting`` is set while a model answer is pending (the worker cannot send or finish then);
    ``error`` says why the last answer failed, so the page stops "thinking" and says so.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        FINISHED = "finished", "Finished"

    dialog = models.OneToOneField(Dialog, on_delete=models.CASCADE, related_name="chat")
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chats")
    purpose = models.CharField(max_length=16, choices=ChatPurpose.choices)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.NATURAL)
    role = models.ForeignKey(DialogRole, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    waiting = models.BooleanField(default=False)
    # When the model was last asked: a wait past CHAT_ANSWER_TIMEOUT_SECONDS may be asked again.
    asked_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["worker", "status"], name="chat_worker_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(purpose__in=ChatPurpose.values), name="chat_purpose_valid"),
            # Modes are the safety collection's (natural, sensitive topics, adversarial).
            models.CheckConstraint(
                condition=Q(purpose=ChatPurpose.SAFETY) | Q(mode=Mode.NATURAL), name="chat_mode_safety_only"
            ),
            # A role chat talks to a role; no other chat does.
            models.CheckConstraint(
                condition=Q(purpose=ChatPurpose.ROLE, role__isnull=False)
                | (~Q(purpose=ChatPurpose.ROLE) & Q(role__isnull=True)),
                name="chat_role_iff_role_purpose",
            ),
            models.CheckConstraint(
                condition=Q(status="finished", finished_at__isnull=False)
                | Q(status="open", finished_at__isnull=True),
                name="chat_finished_at",
            ),
            models.CheckConstraint(
                condition=Q(waiting=False) | Q(status="open"), name="chat_waiting_only_open"
            ),
        ]

    def __str__(self) -> str:
        return f"chat {self.pk} ({self.get_purpose_display()}, {self.status})"

    @property
    def stalled(self) -> bool:
        """Waiting for longer than an answer should take (no inference worker, or a lost task)."""
        from datetime import timedelta

        from django.utils import timezone

        limit = timedelta(seconds=settings.CHAT_ANSWER_TIMEOUT_SECONDS)
        return self.waiting and (self.asked_at is None or self.asked_at < timezone.now() - limit)


class FlagReason(models.TextChoices):
    HARMFUL = "harmful", "Harmful content"
    BIAS = "bias", "Unfair bias"
    MISINFORMATION = "misinformation", "Misinformation"
    INCOMPREHENSIBLE = "incomprehensible", "Incomprehensible"
    OTHER = "other", "Other"


class TurnFlag(models.Model):
    """A worker's flag on a model turn of their adversarial chat, with the reason (METHOD.md §1)."""

    Reason = FlagReason

    # Served by the unique (turn, worker) index.
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="flags", db_index=False)
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["turn", "worker"], name="flag_once_per_worker"),
            models.CheckConstraint(condition=Q(reason__in=FlagReason.values), name="flag_reason_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.turn} flagged {self.reason}"


# The campaign kind that rates the model turns of a finished chat of each purpose (the newest
# open campaign of this kind, unless ChatRouting names one).
ROUTED_KIND: dict[str, str] = {
    ChatPurpose.QUALITY: Campaign.Kind.SSI,
    ChatPurpose.SAFETY: Campaign.Kind.SAFETY,
    ChatPurpose.GROUNDEDNESS: Campaign.Kind.GROUNDEDNESS_REWRITE,
    ChatPurpose.ROLE: Campaign.Kind.HELPFULNESS,
}


# The campaign kind that rates, blind, the responses to an evaluation set's contexts of each purpose
# (annotation.services.evaluations.evaluation_responses_enqueue).
EVALUATION_RATING_KIND: dict[str, str] = {
    EvaluationPurpose.QUALITY: Campaign.Kind.SSI,
    EvaluationPurpose.SAFETY: Campaign.Kind.SAFETY,
    EvaluationPurpose.GROUNDEDNESS: Campaign.Kind.GROUNDEDNESS_EVAL,
    EvaluationPurpose.ROLE: Campaign.Kind.HELPFULNESS,
}


class ChatRouting(models.Model):
    """Where the model turns of finished chats of one purpose go to be rated.

    Without a row, or with ``campaign`` blank, a purpose's turns go to the newest open campaign
    of its kind (``ROUTED_KIND``); ``enabled`` off sends them nowhere. A campaign named here
    must be of that kind: safety chats rated for SSI would be lost to the safety data.
    """

    purpose = models.CharField(max_length=16, choices=ChatPurpose.choices, unique=True)
    enabled = models.BooleanField(default=True)
    campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Blank: the newest open campaign of the purpose's kind.",
    )

    class Meta:
        verbose_name_plural = "chat routing"
        ordering = ["purpose"]
        constraints = [
            models.CheckConstraint(condition=Q(purpose__in=ChatPurpose.values), name="routing_purpose_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} chats"

    def clean(self) -> None:
        kind = ROUTED_KIND.get(self.purpose)
        if self.campaign is not None and kind is not None and self.campaign.kind != kind:
            raise ValidationError(
                {
                    "campaign": f"{self.get_purpose_display()} chats are rated in a {kind} campaign; "
                    f"{self.campaign.name} is a {self.campaign.kind} campaign."
                }
            )
