"""The toolset's tables: the document corpus that search reads, the generations that let every
host's search index follow it, and the log of every tool call."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

URL_MAX_CHARS = 2000
TITLE_MAX_CHARS = 500
SESSION_MAX_CHARS = 200
# Queries are capped well below what one row of a btree index can hold (~2,700 bytes).
QUERY_MAX_CHARS = 500


class Tool(models.TextChoices):
    # In the TS order (METHOD.md §5): outputs are concatenated in this order.
    CALCULATOR = "calculator", "Calculator"
    TRANSLATOR = "translator", "Translator"
    SEARCH = "search", "Search"


class Document(models.Model):
    """One document of the search corpus. The database is the source of truth; each host's search
    index (under LOCAL_ARTIFACTS_DIR) is derived from it: it re-indexes the documents whose
    ``generation`` is newer than its own, and can be rebuilt (``rebuild_search_index``)."""

    url = models.URLField(max_length=URL_MAX_CHARS, unique=True)
    title = models.CharField(max_length=TITLE_MAX_CHARS)
    body = models.TextField()
    source = models.CharField(max_length=100, blank=True, db_index=True)
    # The DocumentGeneration value of the write that last changed it (0: before generations).
    generation = models.BigIntegerField(default=0, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title"]
        constraints = [
            models.CheckConstraint(condition=~Q(body=""), name="toolset_document_body_not_empty"),
        ]

    def __str__(self) -> str:
        return self.title


class DocumentRemoval(models.Model):
    """A deleted document's URL and the generation that deleted it, so that every host's index
    drops it too (a URL imported again loses its row)."""

    url = models.URLField(max_length=URL_MAX_CHARS, unique=True)
    generation = models.BigIntegerField(db_index=True)

    def __str__(self) -> str:
        return f"{self.url} (removed at {self.generation})"


class DocumentGeneration(models.Model):
    """One row: how many writes have changed the corpus (``value``), counted since the row was
    made (``epoch``, new whenever the row is: an emptied database is a new epoch). Each write
    takes the row's lock to count itself, so writes commit in generation order and a host that
    reads ``value`` = g finds every change up to g committed."""

    epoch = models.CharField(max_length=32)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.epoch}:{self.value}"


class ToolCall(models.Model):
    """One call of one tool: who asked (a worker or a model version), in which session, what came
    back. Counting the actor's earlier calls of a session+tool+query gives the next rank to serve."""

    Tool = Tool

    session = models.CharField(max_length=SESSION_MAX_CHARS)
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    # Name of the model version that made the call (research loop); a name, not a foreign key:
    # toolset imports no other app (DESIGN.md).
    actor_model = models.CharField(max_length=100, blank=True)
    tool = models.CharField(max_length=16, choices=Tool.choices)
    query = models.TextField()
    # [{"rank", "title", "url", "snippet"}] as served.
    results = models.JSONField(default=list, blank=True)
    # The rank served: for search the n-th repeat of a query in a session by one actor serves rank n.
    rank = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["session", "tool", "query"], name="toolset_call_session_query")]
        constraints = [
            # The rank cursor is an actor's own (a user, else a model version): two concurrent
            # repeats of one query in one session by one actor cannot both serve the same rank.
            models.UniqueConstraint(
                fields=["session", "tool", "query", "actor_user", "rank"],
                condition=Q(tool="search", actor_user__isnull=False),
                name="toolset_call_user_search_rank_unique",
            ),
            models.UniqueConstraint(
                fields=["session", "tool", "query", "actor_model", "rank"],
                condition=Q(tool="search", actor_user__isnull=True) & ~Q(actor_model=""),
                name="toolset_call_model_search_rank_unique",
            ),
            models.CheckConstraint(condition=~Q(session=""), name="toolset_call_session_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.tool}: {self.query[:60]}"
