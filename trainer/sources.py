"""Where dataset examples come from: dialogs, consensus labels and rewrites, read as a stream.

Labels and rewrites are annotation's: they are read through ``annotation.selectors``
(``labelled_items``, ``unsafe_items``, ``rewritten_items``, ``rewrite_searches``), never from
annotation's tables directly.

Each source yields ``Source`` units (one dialog, one item) in a fixed order (by
primary key), each with the examples it gives *before* tokenization, so the export can count
progress per unit and render with any tokenizer. Nothing here writes, and no read stays open
while the caller writes (``_in_batches``).

- ``pretrain``: every turn after the first of every dialog (optionally only some purposes) is a
  generative example, with the turns before it as context (at most ``PRETRAIN_CONTEXT_TURNS``).
  With ``model_versions``, only the model turns those versions wrote (``Turn.model_version``, each
  turn credited to its own writer) are examples, still with the turns before them as context.
  With ``documents`` (and no ``model_versions``), documents of the toolset's search corpus
  (``toolset.Document``: the demo's Wikipedia summaries) join them as ``document`` examples
  (``formats`` rule 11), one per passage of at most ``DOCUMENT_PASSAGE_CHARS`` characters of whole
  sentences: the paper pre-trains on dialogs *and* web documents. Every document
  when ``documents`` is None, else that many in the order of the sha256 of their URL (a fixed,
  spread-out sample). Documents always go to the train split: they are not dialogs, so no
  evaluation context comes from one and none can leak a held-out turn; validation loss and
  Hits@1 stay measured on held-out dialogs.
- ``quality_safety`` (METHOD.md §8, FT quality-safety): from the consensus labels of the chosen
  campaigns, a discriminative example per label — SSI ``sensible``/``specific``/``interesting`` →
  SENSIBLE/SPECIFIC/INTERESTING, safety ``unsafe`` → UNSAFE, groundedness evaluation
  ``factually_correct`` → CORRECT — and a generative example for every SSI item labelled sensible,
  specific *and* interesting whose response no chosen safety campaign labelled unsafe (the
  paper's filtered generation data).
- ``groundedness`` (METHOD.md §4, §8), one source per answered item of the rewrite campaigns:
  from each researched rewrite with its research session's queries and the result each got
  (title, URL, snippet): task 1 (context + base → first query) and task 2 for every later step
  (→ next query) and the last (→ ``User``, the rewrite). The base is the turn's base text when
  the model researched the turn, else the rated response. When the raters' consensus says the
  response needs no research (no claims about the external world, or common knowledge), task 1
  → ``User``, the base itself instead, and the item's rewrites are left out (counted). And a
  CORRECT discriminative example per sampled candidate the raters labelled, by the majority of
  those who labelled it (ties left out, counted).

Held out of every dataset (``held_out_dialogs``): the dialogs of evaluation answers (source
``evaluation``) and the dialogs evaluation contexts were cut from, with the items of their turns;
the builds count them in the manifest (``skipped``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db.models import Exists, Model, OuterRef, Q, QuerySet

from annotation import rules, selectors
from annotation.models import Campaign, Item, Rewrite
from dialogs.evaluation_responses import EVALUATION_SOURCE
from dialogs.models import Dialog, EvaluationContext, Turn
from toolset.models import Document
from trainer.steps import Step

PRETRAIN_CONTEXT_TURNS = 8
# A document's passages (``passages``): about as long as a dialog turn with its context, so a
# batch that mixes both is not padded to a whole article.
DOCUMENT_PASSAGE_CHARS = 240
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
DISCRIMINATOR_ATTRIBUTES = {
    "sensible": "SENSIBLE",
    "specific": "SPECIFIC",
    "interesting": "INTERESTING",
    rules.UNSAFE: "UNSAFE",
    "factually_correct": "CORRECT",
}
QUALITY_SAFETY_CAMPAIGNS = (Campaign.Kind.SSI, Campaign.Kind.SAFETY, Campaign.Kind.GROUNDEDNESS_EVAL)
GROUNDEDNESS_CAMPAIGNS = (Campaign.Kind.GROUNDEDNESS_REWRITE,)
HELD_OUT = "held_out_for_evaluation"  # the manifest's count of sources left out for evaluation

Context = list[tuple[str, str]]
M = TypeVar("M", bound=Model)


@dataclass
class Pending:
    """One example before tokenization."""

    kind: str
    key: str
    context: Context
    response: str
    attribute: str | None = None
    label: int | None = None
    soft_label: float | None = None
    research: list[Step] = field(default_factory=list)
    outcome: tuple[str, str] | None = None  # ("TS" | "User", text)
    title: str = ""  # a document's title (kind ``document``; its body is ``response``)


@dataclass
class Source:
    dialog: str  # what the train/validation split is decided by
    examples: list[Pending]
    skipped: dict[str, int] = field(default_factory=dict)  # what was left out, and why (manifest)
    split: str | None = None  # a fixed split (documents: train); None: decided by ``dialog``


def _in_batches(queryset: QuerySet[M], size: int) -> Iterator[M]:
    """The rows of ``queryset`` (ordered by primary key), read ``size`` at a time, each batch a
    query of its own that is over before the caller sees its rows.

    Not ``iterator()``: on SQLite that keeps one statement, and so one read snapshot, open for
    the whole read, and the exporter's progress update in between then fails at once with
    "database is locked" as soon as another process has written (SQLITE_BUSY_SNAPSHOT: waiting
    does not help, the snapshot is stale).
    """
    last = None
    while True:
        batch = list((queryset if last is None else queryset.filter(pk__gt=last))[:size])
        yield from batch
        if len(batch) < size:
            return
        last = batch[-1].pk


def speaker(name: str) -> str:
    """``user`` or ``model``: imported turns may name speakers otherwise (``bot``, ``A``...)."""
    return "model" if name.lower() in ("model", "bot", "assistant", "system") else "user"


def _context(turns: Sequence[dict[str, Any]]) -> Context:
    return [(speaker(str(t.get("speaker", "user"))), str(t.get("text", ""))) for t in turns]


def _item_dialog(item: Item) -> str:
    return f"dialog:{item.turn.dialog.external_id}" if item.turn_id else f"item:{item.campaign_id}:{item.key}"


def _response_key(item: Item) -> str:
    """What identifies a response across campaigns: its turn, else its key."""
    return f"turn:{item.turn_id}" if item.turn_id else f"key:{item.key}"


# --- held out for evaluation ---------------------------------------------------------------------


def held_out_dialogs() -> QuerySet[Dialog]:
    """Dialogs no dataset trains on: evaluation answers (``EVALUATION_SOURCE``) and the dialogs
    that evaluation contexts were cut from (``EvaluationContext.source_dialog``)."""
    cut = EvaluationContext.objects.filter(source_dialog=OuterRef("pk"))
    return Dialog.objects.filter(Q(source=EVALUATION_SOURCE) | Exists(cut))


def without_held_out(items: QuerySet[Item]) -> QuerySet[Item]:
    """``items`` less those whose turn is in a held-out dialog (items without a turn stay).

    A ``NOT EXISTS`` on each item's own dialog (two index probes), not ``NOT IN`` the held-out
    dialogs: that scanned every dialog at every batch the builds read (``_in_batches``)."""
    return items.exclude(Exists(held_out_dialogs().filter(pk=OuterRef("turn__dialog_id"))))


def held_out_items(items: QuerySet[Item]) -> QuerySet[Item]:
    """The ``items`` whose turn is in a held-out dialog."""
    return items.filter(turn__dialog__in=held_out_dialogs())


# --- pretrain -----------------------------------------------------------------------------------


def _dialogs(purposes: Sequence[str], model_versions: Sequence[str]) -> QuerySet[Dialog]:
    dialogs = Dialog.objects.order_by("pk")
    if model_versions:
        written = Turn.objects.filter(dialog=OuterRef("pk"), model_version__in=model_versions)
        dialogs = dialogs.filter(Exists(written))
    return dialogs.filter(purpose__in=purposes) if purposes else dialogs


def pretrain_dialogs(purposes: Sequence[str] = (), model_versions: Sequence[str] = ()) -> QuerySet[Dialog]:
    """The dialogs of ``purposes`` (all when empty) that have a turn written by one of
    ``model_versions`` (when given), less the held-out ones (``held_out_dialogs``)."""
    return _dialogs(purposes, model_versions).exclude(pk__in=held_out_dialogs().values("pk"))


def pretrain_held_out(purposes: Sequence[str] = (), model_versions: Sequence[str] = ()) -> int:
    """How many dialogs ``pretrain_dialogs`` leaves out for evaluation."""
    return _dialogs(purposes, model_versions).filter(pk__in=held_out_dialogs().values("pk")).count()


def pretrain_texts(purposes: Sequence[str] = (), documents: int | None = 0) -> Iterator[str]:
    """Every turn's text, then the text of the chosen documents (``pretrain_documents``), for
    training a tokenizer."""
    turns = Turn.objects.filter(dialog__in=pretrain_dialogs(purposes)).order_by("dialog_id", "index")
    yield from turns.values_list("text", flat=True).iterator(chunk_size=5000)
    for document in _in_batches(pretrain_documents(documents), 1000):
        yield f"{document.title}\n{document.body}"


def pretrain_sources(purposes: Sequence[str] = (), model_versions: Sequence[str] = ()) -> Iterator[Source]:
    dialogs = pretrain_dialogs(purposes, model_versions).prefetch_related("turns")
    for dialog in _in_batches(dialogs, 500):
        stored = sorted(dialog.turns.all(), key=lambda t: t.index)
        turns = [(speaker(t.speaker), t.text) for t in stored]
        examples = [
            Pending(
                kind="generative",
                key=f"turn-{dialog.pk}-{index}",
                context=turns[max(0, index - PRETRAIN_CONTEXT_TURNS) : index],
                response=turn.text,
            )
            for index, turn in enumerate(stored)
            if index > 0 and (not model_versions or turn.model_version in model_versions)
        ]
        yield Source(dialog=f"dialog:{dialog.external_id}", examples=examples)


def pretrain_documents(documents: int | None) -> QuerySet[Document]:
    """The documents a pretrain dataset takes, by primary key: none for 0, every document for None,
    else the first ``documents`` in the order of the sha256 of their URL."""
    if documents == 0:
        return Document.objects.none()
    if documents is None or documents >= Document.objects.count():
        return Document.objects.order_by("pk")
    urls = Document.objects.values_list("pk", "url").iterator(chunk_size=5000)
    ordered = sorted(urls, key=lambda row: hashlib.sha256(row[1].encode()).digest())[:documents]
    return Document.objects.filter(pk__in=[pk for pk, _ in ordered]).order_by("pk")


def passages(body: str, most: int = DOCUMENT_PASSAGE_CHARS) -> list[str]:
    """``body`` cut into passages of whole sentences (after ``.``, ``!`` or ``?`` and a space), each
    at most ``most`` characters unless one sentence alone is longer (it is kept whole)."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(body.strip()):
        if out and len(out[-1]) + 1 + len(sentence) <= most:
            out[-1] = f"{out[-1]} {sentence}"
        elif sentence:
            out.append(sentence)
    return out


def document_sources(documents: int | None) -> Iterator[Source]:
    """One source per chosen document (``pretrain_documents``) with a ``document`` example per
    passage of its body (``passages``), always in the train split."""
    for document in _in_batches(pretrain_documents(documents), 1000):
        examples = [
            Pending(
                kind="document",
                key=f"document-{document.pk}-{number}",
                context=[],
                response=passage,
                title=document.title,
            )
            for number, passage in enumerate(passages(document.body), start=1)
        ]
        yield Source(dialog=f"document:{document.url}", examples=examples, split="train")


# --- quality and safety -------------------------------------------------------------------------


def quality_safety_unsafe(campaigns: Sequence[Campaign]) -> set[str]:
    """Responses (``_response_key``) some chosen safety campaign labelled unsafe."""
    items = selectors.unsafe_items(campaigns=campaigns).only("pk", "turn_id", "key")
    return {_response_key(item) for item in items.iterator(chunk_size=5000)}


def quality_safety_sources(campaigns: Sequence[Campaign]) -> Iterator[Source]:
    unsafe = quality_safety_unsafe(campaigns)
    for item in _in_batches(without_held_out(selectors.labelled_items(campaigns=campaigns)), 1000):
        labels = {label.attribute: label for label in item.labels.all()}
        context = _context(item.context)
        examples = [
            Pending(
                kind="discriminative",
                key=f"item-{item.pk}-{name}",
                context=context,
                response=item.response,
                attribute=name,
                label=labels[attribute].label,
                soft_label=labels[attribute].yes_fraction,
            )
            for attribute, name in DISCRIMINATOR_ATTRIBUTES.items()
            if attribute in labels
        ]
        good = all(a in labels and labels[a].label == 1 for a in rules.SSI_ATTRIBUTES)
        if item.campaign.kind == Campaign.Kind.SSI and good and _response_key(item) not in unsafe:
            examples.append(
                Pending(kind="generative", key=f"item-{item.pk}", context=context, response=item.response)
            )
        yield Source(dialog=_item_dialog(item), examples=examples)


# --- groundedness -------------------------------------------------------------------------------


def groundedness_sources(campaigns: Sequence[Campaign]) -> Iterator[Source]:
    for item in _in_batches(without_held_out(selectors.rewritten_items(campaigns=campaigns)), 200):
        context = _context(item.context)
        base = groundedness_base(item)
        no_research = groundedness_needs_no_research(item)
        examples: list[Pending] = []
        skipped: dict[str, int] = {}
        for assignment in item.answered:
            rewrite = assignment.rewrite
            if not (rewrite.researched and rewrite.text):
                continue
            if no_research:
                skipped["rewrites_of_items_needing_no_research"] = (
                    skipped.get("rewrites_of_items_needing_no_research", 0) + 1
                )
                continue
            examples += groundedness_research(rewrite, context, base)
        if no_research:
            if base != item.response:
                # The model researched the turn: the raters judged its outcome, not the base.
                skipped["no_research_items_researched_by_the_model"] = 1
            else:
                examples.append(
                    Pending(
                        kind="research_query",
                        key=f"item-{item.pk}-no-research",
                        context=context,
                        response=base,
                        outcome=("User", base),
                    )
                )
        correct, ties = groundedness_correct(item, context)
        examples += correct
        if ties:
            skipped["candidate_label_ties"] = ties
        yield Source(dialog=_item_dialog(item), examples=examples, skipped=skipped)


def groundedness_base(item: Item) -> str:
    """The base response research starts from, as at inference: the turn's base text when the
    model researched the turn (its text is then the research's outcome), else the rated response."""
    turn = item.turn
    return turn.base_text if turn is not None and turn.base_text else item.response


def groundedness_needs_no_research(item: Item) -> bool:
    """Whether the consensus of all the campaign's raters says the response needs no research:
    no claims about the external world, or every one of them common knowledge (METHOD.md §4).
    An item some of whose raters have not answered has no labels (the build recomputes the
    consensus first), so it needs research."""
    labels = {label.attribute: label.label for label in item.labels.all()}
    return labels.get(rules.CLAIMS_EXTERNAL) == 0 or labels.get(rules.COMMON_KNOWLEDGE) == 1


def groundedness_steps(rewrite: Rewrite) -> list[Step]:
    """The rewrite's searches, each with the result it served (empty strings when none)."""
    steps = []
    for call in selectors.rewrite_searches(rewrite):
        result = call.results[0] if call.results else {}
        steps.append(
            Step(
                query=call.query,
                title=str(result.get("title") or ""),
                url=str(result.get("url") or ""),
                snippet=str(result.get("snippet") or ""),
            )
        )
    return steps


def groundedness_research(rewrite: Rewrite, context: Context, base: str) -> list[Pending]:
    """Task 1 (→ the first query) and task 2 for every later step and the rewrite (→ ``User``)."""
    steps = groundedness_steps(rewrite)
    if not steps:
        return []
    key = f"rewrite-{rewrite.pk}"
    examples = [
        Pending(
            kind="research_query",
            key=f"{key}-q1",
            context=context,
            response=base,
            outcome=("TS", steps[0].query),
        )
    ]
    for done in range(1, len(steps) + 1):
        outcome = ("TS", steps[done].query) if done < len(steps) else ("User", rewrite.text)
        examples.append(
            Pending(
                kind="research_step",
                key=f"{key}-s{done}",
                context=context,
                response=base,
                research=steps[:done],
                outcome=outcome,
            )
        )
    return examples


def groundedness_correct(item: Item, context: Context) -> tuple[list[Pending], int]:
    """CORRECT examples of the item's sampled candidates (METHOD.md §4: the paper's 9K labelled
    turns), each labelled by the majority of the raters who labelled it, soft label their
    "correct" fraction; and how many candidates were left out for a tie."""
    votes: dict[str, list[int]] = {}  # candidate id → [incorrect, correct]
    for assignment in item.answered:
        for candidate, value in assignment.rewrite.candidate_labels.items():
            votes.setdefault(str(candidate), [0, 0])[value == "correct"] += 1
    if item.turn is None or not votes:
        return [], 0
    examples, ties = [], 0
    for candidate in sorted(item.turn.candidates.all(), key=lambda c: c.index):
        if str(candidate.pk) not in votes:
            continue
        incorrect, correct = votes[str(candidate.pk)]
        if correct == incorrect:
            ties += 1
            continue
        examples.append(
            Pending(
                kind="discriminative",
                key=f"item-{item.pk}-candidate-{candidate.pk}-CORRECT",
                context=context,
                response=candidate.text,
                attribute="CORRECT",
                label=int(correct > incorrect),
                soft_label=correct / (correct + incorrect),
            )
        )
    return examples, ties
