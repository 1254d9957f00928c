"""Every write and rule of the toolset: importing documents, keeping the search index in step
with them, and answering toolset queries (METHOD.md §5) with each call logged.

Every host keeps a search index of its own (``LOCAL_ARTIFACTS_DIR/search``: tantivy is a
mutable database, unsafe on shared network storage). Each write to the corpus counts itself in
``DocumentGeneration`` and stamps the documents it wrote (``Document.generation``, or a
``DocumentRemoval``); an index records the generation it last caught up to (its mark). Before a
search, a host compares that with the database (one primary-key read) and, when behind,
re-indexes just the documents written since: an import through any host, or while a host was
down, reaches every host's search, whichever worker ran the import's task.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, QuerySet
from django.utils.module_loading import import_string
from filelock import Timeout as LockTimeout

from groundwork import queueing
from groundwork.errors import DomainError
from groundwork.jsonl import (
    ImportErrors,
    ImportRefused,
    RecordError,
    parse_each_line,
    parse_each_object,
    unique_records,
)
from toolset import calculator, translator
from toolset.models import (
    QUERY_MAX_CHARS,
    SESSION_MAX_CHARS,
    Document,
    DocumentGeneration,
    DocumentRemoval,
    Tool,
    ToolCall,
)
from toolset.records import DocumentRecord, parse_document
from toolset.search import WRITER_LOCK_TIMEOUT_S, SearchIndex

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Import stops collecting after this many errors: enough to fix a file in one pass.
BATCH_SIZE = 1000
# Concurrent repeats of one query in one session race for the same rank; the loser retries.
RANK_ATTEMPTS = 5
# Search serves the n-th ranked document to the n-th repeat of a query in a session; beyond this
# rank it answers no result without searching (no one reads further, and each repeat would make
# the index rank one document more).
SEARCH_MAX_RANK = 100
# Before a search, how long to wait for another process of this host that is bringing the index
# in step: a small catch-up is seen, a large one (a big import) is not waited for.
SEARCH_CATCH_UP_WAIT_S = 2.0


# --- documents --------------------------------------------------------------------------------
class DocumentImportError(ImportRefused):
    """A document import was refused; nothing was written."""


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    urls: list[str] = field(default_factory=list)  # created or updated


@dataclass(frozen=True)
class DocumentLimits:
    max_line_bytes: int


def import_limits() -> DocumentLimits:
    return DocumentLimits(max_line_bytes=settings.TOOLSET_IMPORT_MAX_LINE_BYTES)


def parse_jsonl(lines: Iterable[str | bytes]) -> Iterator[DocumentRecord | RecordError]:
    return parse_each_line(lines, parse_document, import_limits())


def parse_objects(objects: Iterable[Any]) -> Iterator[DocumentRecord | RecordError]:
    return parse_each_object(objects, parse_document, import_limits())


def documents_import(*, lines: Iterable[str | bytes], source: str) -> ImportResult:
    """Import WikiExtractor JSONL lines all or nothing (see ``toolset.records``)."""
    return documents_import_records(records=parse_jsonl(lines), source=source)


def documents_import_records(
    *, records: Iterable[DocumentRecord | RecordError], source: str, index_after_commit: bool = True
) -> ImportResult:
    """Import parsed documents all or nothing; the search index follows after commit (a task),
    unless the caller rebuilds it itself (``index_after_commit=False``).

    A URL already stored with the same title and text is left as it is; with other content it
    is updated in place. Unlike dialogs, updating is safe: no label points at a document (a
    citation is a URL and a snippet copied into the rewrite), so a corpus can be refreshed from
    a newer dump. Raises ``DocumentImportError`` with every problem found (up to
    ``MAX_REPORTED_ERRORS``) and writes nothing then.
    """
    errors = ImportErrors(DocumentImportError)
    pending = unique_records(records, key=lambda record: record.url, field="url", errors=errors)
    errors.refuse_if_any()

    if index_after_commit:
        # Documents updated in place cannot be taken back after commit: make sure the index
        # task can be queued before writing anything (a 503 otherwise).
        queueing.check_task_queue()
    source = source[: Document._meta.get_field("source").max_length]
    result = ImportResult()
    urls = list(pending)
    generation = 0
    with transaction.atomic():
        for start in range(0, len(urls), BATCH_SIZE):
            chunk = urls[start : start + BATCH_SIZE]
            stored = {d.url: d for d in Document.objects.select_for_update().filter(url__in=chunk)}
            new, changed = [], []
            for url in chunk:
                record = pending[url]
                document = stored.get(url)
                if document is None:
                    new.append(Document(url=url, title=record.title, body=record.body, source=source))
                elif (document.title, document.body) != (record.title, record.body):
                    document.title, document.body, document.source = record.title, record.body, source
                    changed.append(document)
                else:
                    result.unchanged += 1
            if (new or changed) and not generation:
                generation = _generation_next()
            for document in new + changed:
                document.generation = generation
            Document.objects.bulk_create(new)
            Document.objects.bulk_update(changed, ["title", "body", "source", "generation"])
            if new:
                DocumentRemoval.objects.filter(url__in=[d.url for d in new]).delete()
            result.created += len(new)
            result.updated += len(changed)
            result.urls += [d.url for d in new] + [d.url for d in changed]
        if result.urls and index_after_commit:
            search_index_sync_later()
    logger.info(
        "imported documents from %s: %d new, %d updated, %d unchanged",
        source,
        result.created,
        result.updated,
        result.unchanged,
    )
    return result


def documents_import_file(*, path: Path, source: str | None = None) -> ImportResult:
    """Import a WikiExtractor JSONL file; all or nothing."""
    with path.open("rb") as stream:
        return documents_import(lines=stream, source=source or path.name)


def documents_present(*, urls: Iterable[str]) -> int:
    """How many of ``urls`` are stored (cheap: a count per batch, no rows loaded)."""
    urls = list(dict.fromkeys(urls))
    return sum(
        Document.objects.filter(url__in=urls[start : start + BATCH_SIZE]).count()
        for start in range(0, len(urls), BATCH_SIZE)
    )


def document_save(*, document: Document) -> Document:
    """Store one document as edited (the admin's form); every host's index follows."""
    with transaction.atomic():
        document.generation = _generation_next()
        document.save()
        DocumentRemoval.objects.filter(url=document.url).delete()
        search_index_sync_later()
    return document


def documents_delete(*, documents: QuerySet[Document]) -> int:
    """Delete ``documents``; every host's index drops them (a ``DocumentRemoval`` each)."""
    with transaction.atomic():
        urls = list(documents.select_for_update().values_list("url", flat=True))
        if not urls:
            return 0
        generation = _generation_next()
        DocumentRemoval.objects.bulk_create(
            [DocumentRemoval(url=url, generation=generation) for url in urls],
            update_conflicts=True,
            unique_fields=["url"],
            update_fields=["generation"],
        )
        deleted, _ = Document.objects.filter(url__in=urls).delete()
        search_index_sync_later()
    return deleted


def _generation_next() -> int:
    """Count one more write to the corpus; call it inside the write's transaction. The row stays
    locked until that commits, so writes commit in the order of their generations."""
    for _attempt in range(2):
        row = DocumentGeneration.objects.select_for_update().filter(pk=1).first()
        if row is not None:
            row.value += 1
            row.save(update_fields=["value"])
            return row.value
        try:
            with transaction.atomic():  # the first write (of this database: a new epoch)
                DocumentGeneration.objects.create(pk=1, epoch=uuid.uuid4().hex, value=0)
        except IntegrityError:
            pass  # a concurrent first write made it: count on it
    raise RuntimeError("toolset_documentgeneration has no row 1 after creating it")


@dataclass
class DemoLoadResult:
    skipped: bool  # everything was there already: nothing imported, the index left as it is
    documents: int  # in the demo corpus
    indexed: int  # documents in the search index afterwards
    imported: ImportResult = field(default_factory=ImportResult)


def documents_load_demo(
    *, records: Iterable[DocumentRecord], source: str, force: bool = False
) -> DemoLoadResult:
    """Import a demo corpus and build the search index at once (no worker needed to search).

    Fast when nothing is to do (it runs on every ``make run``): if every record's URL is stored
    and the index holds at least that many documents, nothing is written. Otherwise the records
    are imported (all or nothing; unchanged ones stay as they are) and the index is rebuilt from
    the database synchronously, so no index task is queued for them.
    """
    records = list(records)
    present = documents_present(urls=[r.url for r in records])
    indexed = search_index().count()
    if not force and present == len(records) and indexed >= present:
        return DemoLoadResult(skipped=True, documents=len(records), indexed=indexed)
    imported = documents_import_records(records=records, source=source, index_after_commit=False)
    return DemoLoadResult(
        skipped=False, documents=len(records), indexed=search_index_rebuild(), imported=imported
    )


# --- the search index -------------------------------------------------------------------------
def search_index() -> SearchIndex:
    """This host's index: under ``LOCAL_ARTIFACTS_DIR`` (ARTIFACTS_DIR when unset)."""
    return SearchIndex(Path(settings.LOCAL_ARTIFACTS_DIR or settings.ARTIFACTS_DIR) / "search")


def search_index_sync_later() -> None:
    """After commit, bring the worker host's index in step with the database (a task), so that
    it is current before anyone searches there; every other host catches up before its next
    search (``search_index_catch_up``), so a lost task (broker down) delays nothing for good."""
    queueing.enqueue("toolset.tasks.search_index_sync_task", [], best_effort=True)


@dataclass(frozen=True)
class _Mark:
    """Where the corpus stands: the database's epoch and generation (see DocumentGeneration)."""

    epoch: str
    generation: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.generation}"

    @classmethod
    def parse(cls, text: str | None) -> _Mark | None:
        epoch, _, generation = (text or "").strip().rpartition(":")
        return cls(epoch, int(generation)) if generation.isdigit() else None


def _corpus_mark() -> _Mark:
    # Read before every search: plain SQL takes ~20 µs where the ORM's query takes ~300 µs.
    table = connection.ops.quote_name(DocumentGeneration._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT epoch, value FROM {table} WHERE id = 1")  # noqa: S608 (a model's table)
        row = cursor.fetchone()
    return _Mark(*row) if row else _Mark("", 0)


def search_index_sync(*, urls: Iterable[str] = (), wait_s: float = WRITER_LOCK_TIMEOUT_S) -> int:
    """Bring this host's index in step with the database: re-index the documents written since
    its mark and drop those deleted since, in one commit, then record the new mark; ``urls`` are
    re-indexed as the database has them now (dropped when not stored) whatever their generation.
    An index with no mark, of another epoch (the database was emptied) or ahead of the database
    (restored from a backup) is rebuilt. Idempotent; returns how many documents were (re)indexed.
    Waits up to ``wait_s`` for another writer of this host (``filelock.Timeout`` after)."""
    urls = list(dict.fromkeys(urls))
    index = search_index()
    target = _corpus_mark()
    if not urls and index.mark() == str(target):
        return 0  # the common case: one primary-key read and one small file
    with index.locked(wait_s):
        mark = _Mark.parse(index.mark())  # another process of this host may have caught up
        if mark == target and not urls:
            return 0
        if mark is None or mark.epoch != target.epoch or mark.generation > target.generation:
            return _rebuild(index, target)
        since = Q(generation__gt=mark.generation, generation__lte=target.generation)
        removed = list(DocumentRemoval.objects.filter(since).values_list("url", flat=True))
        named: list[Document] = []
        for start in range(0, len(urls), BATCH_SIZE):
            chunk = urls[start : start + BATCH_SIZE]
            found = list(Document.objects.filter(url__in=chunk).only("url", "title", "body"))
            stored = {d.url for d in found}
            named += found
            removed += [u for u in chunk if u not in stored]
        changed = Document.objects.filter(since).only("url", "title", "body").order_by("id")
        # Streamed, one commit; a document both changed and named is replaced twice (one copy).
        documents = itertools.chain(changed.iterator(chunk_size=BATCH_SIZE), named)
        count = index.update(documents, removed_urls=removed, mark=str(target))
    if count or removed:
        logger.info("search index %s: %d documents re-indexed, %d dropped", index.path, count, len(removed))
    return count


def search_index_catch_up() -> None:
    """Before a search: bring this host's index in step with the database, unless another
    process of the host is doing so and takes longer than ``SEARCH_CATCH_UP_WAIT_S`` (then the
    search answers from the index as it is)."""
    try:
        search_index_sync(wait_s=SEARCH_CATCH_UP_WAIT_S)
    except LockTimeout:
        logger.info("the search index is being brought in step by another process: searching it as it is")


def search_index_rebuild() -> int:
    """Rebuild the whole index from the database (one commit: searches never see it half-built)."""
    index = search_index()
    with index.locked():
        return _rebuild(index, _corpus_mark())


def _rebuild(index: SearchIndex, target: _Mark) -> int:
    # The mark is read first: a document written meanwhile is indexed now and again later.
    documents = Document.objects.only("url", "title", "body").order_by("id").iterator(chunk_size=BATCH_SIZE)
    return index.rebuild(documents, mark=str(target))


# --- toolset queries --------------------------------------------------------------------------
class ToolsetQueryError(DomainError):
    """A query the toolset cannot run: 400 naming the request's field (``{field: [message]}``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    def body(self) -> dict[str, Any]:
        return {self.field: [self.message]}


class ToolsetSessionRefused(DomainError):
    """The user may not query in this session (``TOOLSET_SESSION_CHECK`` said why); ``status`` is
    the HTTP answer (403: someone else's session)."""

    status = 403


def session_check(*, session: str, user: User) -> None:
    """Raise ``ToolsetSessionRefused`` unless ``user`` may query in ``session``.

    A session can belong to another app's work: annotation's research session of an assignment
    is its worker's alone. Toolset imports no other app (DESIGN.md), so the rule is reached
    through ``settings.TOOLSET_SESSION_CHECK``, a dotted path to ``check(*, session, user)``
    resolved at run time (empty: every session is open to everyone).
    """
    if settings.TOOLSET_SESSION_CHECK:
        import_string(settings.TOOLSET_SESSION_CHECK)(session=session, user=user)


@dataclass(frozen=True)
class ToolResult:
    tool: str
    rank: int
    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class _Call:
    session: str
    query: str
    actor_user: User | None
    actor_model: str

    def earlier_searches(self) -> QuerySet[ToolCall]:
        """This actor's searches for the query in the session: the rank cursor counts them, so
        nobody else's searches move it."""
        searches = ToolCall.objects.filter(session=self.session, tool=Tool.SEARCH, query=self.query)
        if self.actor_user is not None:
            return searches.filter(actor_user=self.actor_user)
        return searches.filter(actor_user__isnull=True, actor_model=self.actor_model)

    def log(self, tool: Tool, results: list[ToolResult], rank: int = 1) -> ToolCall:
        return ToolCall.objects.create(
            session=self.session,
            query=self.query,
            actor_user=self.actor_user,
            actor_model=self.actor_model,
            tool=tool,
            rank=rank,
            results=[{k: v for k, v in asdict(r).items() if k != "tool"} for r in results],
        )


def toolset_query(
    *,
    session: str,
    query: str,
    actor_user: User | None = None,
    actor_model: str = "",
    tool: str | None = None,
) -> list[ToolResult]:
    """The TS (METHOD.md §5): every tool (or only ``tool``) gets the query; their outputs come
    back concatenated in the order calculator, translator, search. A tool that cannot parse the
    query contributes nothing. Search serves one snippet: the n-th asking of the same query in
    the same session by the same actor gets the n-th ranked document. Every tool that ran is
    logged as a ``ToolCall``. A user's query is refused (``ToolsetSessionRefused``) in a session
    that is not theirs to query in (``session_check``)."""
    session = session.strip()
    query = " ".join(query.split())
    if not session:
        raise ToolsetQueryError("session", "This field may not be blank.")
    if len(session) > SESSION_MAX_CHARS:
        raise ToolsetQueryError(
            "session", f"Ensure this field has no more than {SESSION_MAX_CHARS} characters."
        )
    if not query:
        raise ToolsetQueryError("query", "This field may not be blank.")
    if len(query) > QUERY_MAX_CHARS:
        raise ToolsetQueryError("query", f"Ensure this field has no more than {QUERY_MAX_CHARS} characters.")
    if tool is not None and tool not in Tool.values:
        raise ToolsetQueryError("tool", f"{tool!r} is not a tool (expected one of {', '.join(Tool.values)}).")
    if actor_user is not None:
        session_check(session=session, user=actor_user)
    call = _Call(session=session, query=query, actor_user=actor_user, actor_model=actor_model[:100])
    results: list[ToolResult] = []
    for name in Tool:  # the TS order
        if tool is None or tool == name:
            results += _RUNNERS[name](call)
    return results


def _answers(tool: Tool, answer: Callable[[str], list[str]]) -> Callable[[_Call], list[ToolResult]]:
    """A tool that computes its answers (no source, so no title or URL)."""

    def run(call: _Call) -> list[ToolResult]:
        results = [
            ToolResult(tool=tool, rank=rank, title="", url="", snippet=text)
            for rank, text in enumerate(answer(call.query), start=1)
        ]
        call.log(tool, results)
        return results

    return run


def _search(call: _Call) -> list[ToolResult]:
    search_index_catch_up()
    for _attempt in range(RANK_ATTEMPTS):
        rank = call.earlier_searches().count() + 1
        hits = search_index().search(call.query, limit=1, offset=rank - 1) if rank <= SEARCH_MAX_RANK else []
        results = [
            ToolResult(tool=Tool.SEARCH, rank=hit.rank, title=hit.title, url=hit.url, snippet=hit.snippet)
            for hit in hits
        ]
        try:
            with transaction.atomic():
                call.log(Tool.SEARCH, results, rank=rank)
        except IntegrityError:
            continue  # a concurrent repeat took this rank: serve the next one
        return results
    raise RuntimeError(f"could not log the search after {RANK_ATTEMPTS} attempts")


_RUNNERS: dict[Tool, Callable[[_Call], list[ToolResult]]] = {
    Tool.CALCULATOR: _answers(Tool.CALCULATOR, calculator.calculate),
    Tool.TRANSLATOR: _answers(Tool.TRANSLATOR, translator.translate),
    Tool.SEARCH: _search,
}
