"""Labels that know their raters: a campaign's Dawid–Skene runs, the soft labels and the per-rater
estimates they leave (``annotation.services.rater_models``)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from annotation.models.campaigns import AggregationRun, Campaign, Item


class RaterModelRun(models.Model):
    """A campaign aggregated by a rater-aware model (Dawid–Skene, ``annotation.dawid_skene``) on a
    worker, beside the majority vote; its progress and outcome are shown on the campaign page.

    ``done``/``total`` count steps (reading the judgments by item range, fitting each attribute,
    storing), ``stage`` says which; ``agreement`` is, per attribute, the share of labelled items whose
    Dawid–Skene label equals the majority label, and ``iterations`` the EM iterations it took."""

    Status = AggregationRun.Status

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="rater_model_runs")
    method = models.CharField(max_length=32, default="dawid_skene")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    stage = models.CharField(max_length=100, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    judgments = models.PositiveIntegerField(default=0)
    items = models.PositiveIntegerField(default=0)
    agreement = models.JSONField(default=dict, blank=True)
    iterations = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.method} of {self.campaign_id} ({self.status})"


class RaterAwareLabel(models.Model):
    """The rater-aware (soft) label of one attribute of one complete item: the posterior probability
    of label 1 and the hard label it gives, from the campaign's latest finished ``RaterModelRun``
    (each run replaces the campaign's labels whole). Beside ``ConsensusLabel``, never instead of it."""

    pk = models.CompositePrimaryKey("item_id", "attribute")
    item = models.ForeignKey(
        Item, on_delete=models.CASCADE, related_name="rater_aware_labels", db_index=False
    )
    attribute = models.CharField(max_length=64)
    label = models.PositiveSmallIntegerField()
    probability = models.FloatField(help_text="Posterior probability that the label is 1.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(label__in=[0, 1]), name="rater_aware_label_binary"),
            models.CheckConstraint(
                condition=Q(probability__gte=0) & Q(probability__lte=1), name="rater_aware_probability"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} {self.attribute}={self.label} ({self.probability:.2f})"


class RaterEstimate(models.Model):
    """One rater's estimated quality on one attribute in a ``RaterModelRun``: accuracy, confusion
    matrix ``[[P(0|0), P(1|0)], [P(0|1), P(1|1)]]`` (answer given true label), and whether the flag
    rule (``annotation.dawid_skene.flagged``) marks them for an admin to look at. Never blocks."""

    run = models.ForeignKey(RaterModelRun, on_delete=models.CASCADE, related_name="estimates")
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    attribute = models.CharField(max_length=64)
    answers = models.PositiveIntegerField()
    accuracy = models.FloatField()
    confusion = models.JSONField()
    flagged = models.BooleanField(default=False)

    class Meta:
        ordering = ["run", "worker", "attribute"]
        constraints = [
            models.UniqueConstraint(fields=["run", "worker", "attribute"], name="rater_estimate_once"),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} {self.attribute}: {self.accuracy:.2f}"
