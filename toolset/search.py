"""Full-text search (BM25) over the document corpus with tantivy. No Django import.

The index is derived data: it lives in one folder on the host's own disk
(``LOCAL_ARTIFACTS_DIR/search``), every write goes through one writer at a time (a file lock, so
the web processes, workers and commands of a host share the folder), and the database can always
rebuild it. Beside the folder, ``search.mark`` names the state of the database the index was last
brought in step with (an opaque string the caller chooses, written after each commit), so a host
can tell that it is behind. Queries are reduced to their words before parsing, so user punctuation
(``"``, ``:``, ``(``, ``-``, ``AND``) is never query syntax.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import tantivy
from filelock import FileLock

SNIPPET_MAX_CHARS = 300
WRITER_HEAP_BYTES = 64_000_000
WRITER_LOCK_TIMEOUT_S = 120
SEARCHED_FIELDS = ["title", "body"]
_WORD = re.compile(r"\w+")
_CLOSING = re.compile(r"[^\w\s]+")
_OPEN: dict[Path, tantivy.Index] = {}
_OPEN_LOCK = threading.Lock()
# One FileLock per folder and process: a thread holding it may take it again (``locked`` around
# ``update``); another thread or process waits (filelock is thread-local, flock per open file).
_LOCKS: dict[Path, FileLock] = {}


class IndexedDocument(Protocol):
    url: str
    title: str
    body: str


@dataclass(frozen=True)
class SearchHit:
    rank: int
    title: str
    url: str
    snippet: str


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    # "raw": the whole URL is one term, so a document can be replaced by its URL.
    builder.add_text_field("url", stored=True, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, tokenizer_name=ANALYZER)
    builder.add_text_field("body", stored=True, tokenizer_name=ANALYZER)
    return builder.build()


# English words, lower-cased, stemmed, without stop words: a stop word's posting list holds nearly
# every document, so scoring it made a query on 1M documents ~10x slower while adding no ranking
# signal. Registered on every opened index (tantivy keeps analyzers per Index object).
ANALYZER = "en_stem_nostop"


def _analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def query_words(query: str) -> list[str]:
    """The words of a user's query, lower-cased (so ``AND``/``OR`` are words, not operators)."""
    return [word.lower() for word in _WORD.findall(query)]


class SearchIndex:
    """The tantivy index in ``path`` (created on the first write)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # --- writing ---------------------------------------------------------------------------
    def rebuild(self, documents: Iterable[IndexedDocument], *, mark: str | None = None) -> int:
        """Replace the whole index with ``documents`` in one commit; returns how many. ``mark``
        is recorded once the commit is done (without one, the old mark no longer holds)."""
        with self._writer(mark) as writer:
            if mark is None:
                self.mark_path.unlink(missing_ok=True)
            writer.delete_all_documents()
            count = self._add(writer, documents)
        return count

    def update(
        self,
        documents: Iterable[IndexedDocument],
        *,
        removed_urls: Iterable[str] = (),
        mark: str | None = None,
    ) -> int:
        """Add or replace ``documents`` (by URL) and drop ``removed_urls``, in one commit;
        ``mark`` (when given) is recorded once the commit is done."""
        with self._writer(mark) as writer:
            for url in removed_urls:
                writer.delete_documents_by_term("url", url)
            count = self._add(writer, documents, replace=True)
        return count

    @contextmanager
    def locked(self, timeout: float = WRITER_LOCK_TIMEOUT_S) -> Iterator[None]:
        """Hold the writers' lock, across reading ``mark()`` and writing; raises
        ``filelock.Timeout`` after ``timeout`` seconds. Writes made while holding it take it
        again without waiting."""
        lock = self._lock()
        lock.acquire(timeout=timeout)
        try:
            yield
        finally:
            lock.release()

    def _lock(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _OPEN_LOCK:
            lock = _LOCKS.get(self.path)
            if lock is None:
                lock = _LOCKS[self.path] = FileLock(str(self.path) + ".lock")
            return lock

    @property
    def mark_path(self) -> Path:
        return self.path.with_name(self.path.name + ".mark")

    def mark(self) -> str | None:
        """The mark recorded with the last commit that gave one (None: none yet, or no index)."""
        try:
            mark = self.mark_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return mark if (self.path / "meta.json").is_file() else None  # the index is there too

    def _mark_write(self, mark: str) -> None:
        partial = self.mark_path.with_name(self.mark_path.name + ".partial")
        partial.write_text(mark, encoding="utf-8")
        os.replace(partial, self.mark_path)  # whole or not at all

    add = update

    def _add(
        self, writer: tantivy.IndexWriter, documents: Iterable[IndexedDocument], *, replace: bool = False
    ) -> int:
        count = 0
        for document in documents:
            if replace:
                writer.delete_documents_by_term("url", document.url)
            writer.add_document(tantivy.Document(url=document.url, title=document.title, body=document.body))
            count += 1
        return count

    def _writer(self, mark: str | None = None) -> _Writer:
        return _Writer(self, mark)

    def _index(self) -> tantivy.Index:
        with _OPEN_LOCK:
            index = _OPEN.get(self.path)
            if index is None:
                self.path.mkdir(parents=True, exist_ok=True)
                index = tantivy.Index(_schema(), path=str(self.path), reuse=True)
                index.register_tokenizer(ANALYZER, _analyzer())
                _OPEN[self.path] = index
            return index

    def exists(self) -> bool:
        return self.path.is_dir() and tantivy.Index.exists(str(self.path))

    # --- reading ---------------------------------------------------------------------------
    def search(self, query: str, limit: int = 10, offset: int = 0) -> list[SearchHit]:
        """The best ``limit`` documents for ``query`` by BM25 after the first ``offset``, best
        first, with snippets (``rank`` counts from the best, offset included)."""
        words = query_words(query)
        if not words or limit < 1 or not self.exists():
            return []
        index = self._index()
        index.reload()  # see what other processes committed
        searcher = index.searcher()
        try:
            parsed = index.parse_query(" ".join(words), SEARCHED_FIELDS)
        except ValueError:  # nothing left to look for: only stop words ("Only excluding terms given")
            return []
        snippets = tantivy.SnippetGenerator.create(searcher, parsed, index.schema, "body")
        snippets.set_max_num_chars(SNIPPET_MAX_CHARS)
        hits = []
        found = searcher.search(parsed, limit, count=False, offset=offset).hits
        for rank, (_score, address) in enumerate(found, start=offset + 1):
            stored = searcher.doc(address)
            body = stored.get_first("body") or ""
            hits.append(
                SearchHit(
                    rank=rank,
                    title=stored.get_first("title") or "",
                    url=stored.get_first("url") or "",
                    snippet=_snippet(snippets.snippet_from_doc(stored), body),
                )
            )
        return hits

    def count(self) -> int:
        if not self.exists():
            return 0
        index = self._index()
        index.reload()
        return index.searcher().num_docs


def _snippet(snippet: tantivy.Snippet, body: str) -> str:
    """tantivy's best-scoring passage of the body; the body's start when only the title matched."""
    fragment = snippet.fragment().strip()
    if fragment and snippet.highlighted():
        # tantivy's fragment ends at its last word: keep the sentence's closing punctuation.
        start = body.find(fragment)
        if start >= 0:
            end = start + len(fragment)
            closing = _CLOSING.match(body, end)
            if closing and len(fragment) + len(closing.group()) <= SNIPPET_MAX_CHARS:
                fragment += closing.group()
        return fragment
    if len(body) <= SNIPPET_MAX_CHARS:
        return body.strip()
    return body[:SNIPPET_MAX_CHARS].rsplit(" ", 1)[0].strip() + "…"


class _Writer:
    """One writer at a time across processes; commits on success (then records ``mark``, if
    any, before letting the next writer in), rolls back on error."""

    def __init__(self, search_index: SearchIndex, mark: str | None = None) -> None:
        self.search_index = search_index
        self.mark = mark
        self.lock = search_index._lock()
        self.writer: tantivy.IndexWriter | None = None

    def __enter__(self) -> tantivy.IndexWriter:
        self.lock.acquire(timeout=WRITER_LOCK_TIMEOUT_S)
        try:
            self.writer = self.search_index._index().writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)
        except BaseException:
            self.lock.release()
            raise
        return self.writer

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        assert self.writer is not None
        try:
            if exc_type is None:
                self.writer.commit()
                self.writer.wait_merging_threads()
                if self.mark is not None:
                    self.search_index._mark_write(self.mark)
            else:
                self.writer.rollback()
        finally:
            self.writer = None
            self.lock.release()
