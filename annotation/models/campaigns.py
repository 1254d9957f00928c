"""Crowd work: safety objectives, campaigns of items, assignments (leases) to workers, judgments,
rewrites, consensus labels, workers' gold records and consensus runs."""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce

from dialogs.models import EvaluationContext, EvaluationSet, Turn


class SafetyObjective(models.Model):
    """A safety objective raters check a response against (METHOD.md §3); editable by admins."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    guidance = models.TextField(help_text="Shown to raters under the question.")
    active = models.BooleanField(default=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["order", "slug"]

    def __str__(self) -> str:
        return self.name


class Campaign(models.Model):
    class Kind(models.TextChoices):
        SSI = "ssi", "Sensibleness, specificity, interestingness"
        SAFETY = "safety", "Safety"
        GROUNDEDNESS_REWRITE = "groundedness_rewrite", "Groundedness: rewrite with sources"
        GROUNDEDNESS_EVAL = "groundedness_eval", "Groundedness: evaluation"
        HELPFULNESS = "helpfulness", "Helpfulness and role consistency"
        # Evaluation sets only (annotation.services.evaluations): workers write the next turn of a
        # context (the human baseline), or choose the better of two responders' responses.
        HUMAN_RESPONSE = "human_response", "Human baseline: write the next turn"
        PAIRWISE = "pairwise", "Side by side: the better of two responses"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PAUSED = "paused", "Paused"
        CLOSED = "closed", "Closed"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=24, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)
    raters_per_item = models.PositiveSmallIntegerField()
    instructions = models.TextField(blank=True)
    objectives = models.ManyToManyField(SafetyObjective, blank=True, help_text="Safety campaigns only.")
    # The dialog filters the items came from, kept for lineage.
    filters = models.JSONField(default=dict, blank=True)
    # The evaluation set whose responses (or contexts) the items are: its blind rating, human
    # baseline and side-by-side campaigns (annotation.services.evaluations).
    evaluation_set = models.ForeignKey(
        EvaluationSet, null=True, blank=True, on_delete=models.PROTECT, related_name="campaigns"
    )
    # Quality control: gold items are mixed in at gold_rate; a worker whose gold accuracy is
    # under gold_threshold after gold_min golds is blocked from the campaign.
    gold_rate = models.FloatField(default=0.0)
    gold_min = models.PositiveSmallIntegerField(default=5)
    gold_threshold = models.FloatField(default=0.7)
    # When set, a worker first answers every qualification item and needs this accuracy.
    qualification_threshold = models.FloatField(null=True, blank=True)
    # Beyond the paper (which asks every rater): an item whose labels no remaining rater can change
    # releases its remaining slots at once (annotation.decided). Fixed at creation.
    stop_when_decided = models.BooleanField(
        default=False,
        help_text="Stop asking once the answer is decided: an item whose labels the raters still to "
        "answer can no longer change gets no more ratings. Its labels are those all its raters would "
        "have given; its counts say how many raters it had. Gold and qualification items always get "
        "every rater.",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("evaluate_campaign", "Can start an evaluation set's human baseline and side-by-side campaigns")
        ]
        constraints = [
            models.CheckConstraint(condition=Q(raters_per_item__gte=1), name="campaign_raters_positive"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="campaign_gold_rate"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def kinds_in_words(cls, kinds: Iterable[str]) -> str:
        """Campaign kinds as a person reads them in a message: their labels quoted (a label may
        hold commas), the last after "or": “Safety”, “Groundedness: evaluation” or …"""
        labels = [f"“{cls.Kind(kind).label}”" for kind in kinds]
        return " or ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)


class Item(models.Model):
    """One response to rate, with the turns before it as context (a snapshot of what raters see)."""

    class Kind(models.TextChoices):
        NORMAL = "normal", "Normal"
        GOLD = "gold", "Gold"
        QUALIFICATION = "qualification", "Qualification"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=300)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.NORMAL)
    turn = models.ForeignKey(Turn, null=True, blank=True, on_delete=models.PROTECT, related_name="items")
    # The dialog's writer: workers never rate a dialog they wrote.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    context = models.JSONField(default=list)  # [{"speaker": ..., "text": ...}]
    response = models.TextField()
    # Gold and qualification items: the known answers, {attribute: value}.
    gold_answers = models.JSONField(default=dict, blank=True)
    # Items of an evaluation set's campaigns: the context they are about.
    evaluation_context = models.ForeignKey(
        EvaluationContext, null=True, blank=True, on_delete=models.PROTECT, related_name="items"
    )
    # Side-by-side items: {"a": <EvaluationResponse id>, "b": <id>, "first": "a"|"b", "second":
    # "<the text shown as Response 2>"}; ``response`` is the text shown as Response 1. Which
    # responder wrote what is never shown to raters; "first" maps their choice back to a or b.
    pair = models.JSONField(null=True, blank=True)
    # Slots not held by a lease or a judgment; normal items only.
    open_slots = models.PositiveSmallIntegerField()
    judgment_count = models.PositiveSmallIntegerField(default=0)
    # Campaigns that stop when decided: the judgments the item had when its labels could no longer
    # change (its remaining slots were released then). It is complete from that many judgments on,
    # not the campaign's raters per item (``item_complete``). Null: it waits for every rater.
    decided_at_raters = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "key"], name="item_unique_key"),
        ]
        indexes = [
            # The hot path: the next item with a free slot, in order, without scanning full ones.
            models.Index(
                fields=["campaign", "id"], name="item_open_idx", condition=Q(open_slots__gt=0, kind="normal")
            ),
            models.Index(
                fields=["campaign", "kind", "id"], name="item_kind_idx", condition=~Q(kind="normal")
            ),
        ]

    def __str__(self) -> str:
        return self.key


def item_complete(item: str = "", raters: str | int = "campaign__raters_per_item") -> Q:
    """Complete items (only they have consensus labels): their judgments reached the raters they
    need, the campaign's raters per item (``raters``: a field path from the model queried, or a
    number), or for a decided item the judgments it had when decided. ``item`` is the path to the
    item from the model queried ("item__" from a label, "items__" from a campaign)."""
    needed = Value(raters) if isinstance(raters, int) else F(raters)
    return Q(**{f"{item}judgment_count__gte": Coalesce(F(f"{item}decided_at_raters"), needed)})


class Assignment(models.Model):
    """A worker's lease on one slot of an item, then their submission."""

    class State(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        EXPIRED = "expired", "Expired"
        SKIPPED = "skipped", "Skipped"

    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    # Served by the unique (worker, item) index.
    worker = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments", db_index=False
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.LEASED)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # The submission as the worker sent it: a repeat is recognised and answered with it.
    submission = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            # worker first: the index also answers "which items has this worker had" (assignment_lease_next).
            models.UniqueConstraint(fields=["worker", "item"], name="assignment_once_per_worker"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="assignment_lease_idx", condition=Q(state="leased")),
            models.Index(fields=["worker", "state"], name="assignment_worker_idx"),
            models.Index(fields=["worker", "submitted_at"], name="assignment_done_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} → {self.worker_id} ({self.state})"


class Judgment(models.Model):
    """One answer of one worker about one attribute of one item (after the cascade)."""

    class Value(models.TextChoices):
        YES = "yes", "Yes"
        NO = "no", "No"
        MAYBE = "maybe", "Maybe"

    # Both foreign keys are served by the composite indexes below (no index of their own: every
    # index costs on the hot path's inserts).
    assignment = models.ForeignKey(
        Assignment, on_delete=models.CASCADE, related_name="judgments", db_index=False
    )
    # Denormalised from the assignment so aggregation is one GROUP BY over this table.
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="judgments", db_index=False)
    attribute = models.CharField(max_length=64)
    value = models.CharField(max_length=5, choices=Value.choices)
    # What the worker answered; blank when the cascade did not ask (value then counts "no").
    raw_value = models.CharField(max_length=5, choices=Value.choices, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["assignment", "attribute"], name="judgment_once_per_attribute"),
        ]
        indexes = [models.Index(fields=["item", "attribute", "value"], name="judgment_count_idx")]

    def __str__(self) -> str:
        return f"{self.item_id} {self.attribute}={self.value}"


class Rewrite(models.Model):
    """A worker's answer in a groundedness rewrite campaign (METHOD.md §4): the two questions and,
    when the claims needed research, the rewritten response with the URLs it cites.

    ``tool_call_ids`` are the toolset calls of the assignment's research session (queries and the
    snippets served): with the rewrite they are what the research token formats are built from.
    """

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="rewrite")
    claims_external = models.BooleanField()
    # False when not asked (no external claims).
    common_knowledge = models.BooleanField()
    # Blank when no research was needed.
    text = models.TextField(blank=True)
    cited_urls = models.JSONField(default=list, blank=True)
    tool_call_ids = models.JSONField(default=list, blank=True)
    # The sampled candidates of the turn the worker judged: {"<candidate id>": "correct"|"incorrect"}
    # (attribute CORRECT of the discriminator, METHOD.md §4).
    candidate_labels = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(claims_external=True) | Q(common_knowledge=False),
                name="rewrite_common_knowledge_needs_claims",
            ),
        ]

    def __str__(self) -> str:
        return f"rewrite of {self.assignment_id}"

    @property
    def researched(self) -> bool:
        return self.claims_external and not self.common_knowledge


class ConsensusLabel(models.Model):
    """The consensus on one attribute of one complete item (``annotation.services.consensus``).

    Keyed by (item, attribute), which says a label is stored once per attribute: no surrogate id,
    whose sequence and second index a campaign's first computation paid on every label it wrote."""

    pk = models.CompositePrimaryKey("item_id", "attribute")
    # Served by the primary key's index, which starts with the item. The link is kept by triggers
    # (migration 0008) rather than a foreign key constraint, which checked each label with a query
    # of its own: a label's item exists (checked once per INSERT statement on PostgreSQL), an item
    # with labels is not deleted. On SQLite, a migration that rebuilds this table or Item's must
    # create them again.
    item = models.ForeignKey(
        Item, on_delete=models.CASCADE, related_name="labels", db_index=False, db_constraint=False
    )
    attribute = models.CharField(max_length=64)
    label = models.PositiveSmallIntegerField()
    yes = models.PositiveSmallIntegerField()
    no = models.PositiveSmallIntegerField()
    maybe = models.PositiveSmallIntegerField()
    yes_fraction = models.FloatField()
    rules_version = models.CharField(max_length=16)
    computed_at = models.DateTimeField(auto_now=True, help_text="When the label last changed.")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(label__in=[0, 1]), name="label_binary"),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} {self.attribute}={self.label}"


class WorkerQuality(models.Model):
    """A worker's gold record and standing in one campaign."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="worker_quality")
    worker = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    gold_seen = models.PositiveIntegerField(default=0)
    gold_correct = models.PositiveIntegerField(default=0)
    qualification_seen = models.PositiveIntegerField(default=0)
    qualification_correct = models.PositiveIntegerField(default=0)
    qualified = models.BooleanField(null=True, blank=True)  # None: not decided yet
    blocked = models.BooleanField(default=False)
    blocked_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        verbose_name_plural = "worker quality"
        constraints = [
            models.UniqueConstraint(fields=["campaign", "worker"], name="quality_once_per_worker"),
            models.CheckConstraint(condition=Q(gold_correct__lte=F("gold_seen")), name="quality_gold_bounds"),
        ]

    def __str__(self) -> str:
        return f"{self.worker_id} in {self.campaign_id}"

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_seen if self.gold_seen else None


class AggregationRun(models.Model):
    """Consensus for a whole campaign, computed by a worker; its progress is shown in the admin."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="aggregation_runs")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"consensus of {self.campaign_id} ({self.status})"
