"""Groundwork fine-tuning token formats, version 2 (METHOD.md §6-§8).

Every example kind renders to ``Example(ids, loss_mask, kind)``; ``loss_mask[i] == 1`` means the
model is trained to predict ``ids[i]`` (from the positions before it). Special tokens are single
ids of the tokenizer (see ``trainer.tokenizer.SPECIAL_TOKENS``); they are written ``<...>`` below.

Rendering rules:

1. A text piece (a turn, a response, a query, a tool result) is encoded as ``" " + text``: one space,
   then the text unchanged. Special-token strings inside a text are encoded as plain text, never
   as special tokens. Special tokens carry no spaces of their own, so the decoded example is the
   concatenation below, character for character.
2. Context: each turn ``(speaker, text)``, speaker ``user`` or ``model``, renders as
   ``<user> text`` or ``<model> text``, in order. A context may be empty.
3. ``<eos>`` ends a segment the model generates and is never part of a prefix: context turns,
   the base response and earlier queries carry no ``<eos>``.
4. generative: ``CONTEXT<sentinel> response<eos>``. Loss on the response tokens and ``<eos>``.
   Paper: ``What's up? RESPONSE not much.`` is ``<user> What's up?<sentinel> not much.<eos>``.
5. discriminative: ``CONTEXT<sentinel> response<ATTRIBUTE><rating>``, ATTRIBUTE one of
   SENSIBLE, SPECIFIC, INTERESTING, UNSAFE, CORRECT and rating ``<0>`` or ``<1>``. Loss on the
   rating token only (the last position). Paper: ``What's up? RESPONSE not much. SENSIBLE 1`` is
   ``<user> What's up?<sentinel> not much.<SENSIBLE><1>``.
6. scoring prefix (``render_for_scoring``): ``CONTEXT<sentinel> response``, i.e. the
   discriminative example without its last two ids. At inference ``<ATTRIBUTE>`` is appended and
   P(rating) is read from the next-token distribution over ``<0>``/``<1>``.
7. research base: the base response renders as in generation, ``CONTEXT<sentinel> base``.
8. research_query (task 1): ``CONTEXT<sentinel> base`` then the first outcome: ``<TS> query<eos>``
   (the base needs research) or ``<User> base<eos>`` (it needs none: raters found no claims about
   the external world, or only common knowledge; the base goes to the user unchanged). Loss on
   the outcome: its speaker token, text and ``<eos>``.
9. research_step (task 2): ``CONTEXT<sentinel> base`` then, for each earlier step,
   ``<TS> query<snippet> RESULT``, then the outcome: ``<TS> next query<eos>`` or
   ``<User> response<eos>``. Loss on the outcome only (its speaker token, text and ``<eos>``).
   At least one step is required.
10. RESULT, the tool result a step got (``tool_result``), is one text piece that shows the model
   the source it may cite, in the Markdown link form rewrites cite with:
   ``[title](url) snippet``; ``[url](url) snippet`` when the result has no title; the snippet
   alone when it has no URL (calculator, translator); empty when the toolset had no answer.
   At inference the research loop feeds exactly this rendering (``research_prefix``).
11. document (pre-training only: the paper pre-trains on dialogs *and* web documents): a document
   of the toolset's corpus is plain language modelling, `` title\nbody<eos>``: the title, a
   newline and the body (or a passage of it: ``trainer.sources`` cuts documents into passages of
   whole sentences) as one text piece, then ``<eos>``; no speaker token and no
   ``<sentinel>``, since it is nobody's turn in a dialog, so it never reads as a context or a
   response. Loss on every id (the first is never predicted: nothing comes before it).
   Kind ``document``; a document is not a dialog, so it holds no held-out turn.

Version 2 (was 1): rule 10 (a tool result carried its snippet only, so a model trained to cite
URLs had never seen one) and rule 8's ``<User>`` outcome. Special tokens are unchanged, so
tokenizers and models of version 1 load and render version 2. Rule 11 (documents) came later in
version 2 as a new kind only: every other kind renders as before.

This module does not import Django.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast

from trainer.steps import Step
from trainer.tokenizer import (
    ATTRIBUTE_TOKENS,
    ATTRIBUTES,
    EOS,
    RATING_TOKENS,
    RESEARCH_USER,
    SENTINEL,
    SNIPPET,
    SPEAKER_TOKENS,
    SPECIAL_TOKENS,
    TS,
    special_id,
)

FORMAT_VERSION = "2"

KINDS = ("generative", "discriminative", "research_query", "research_step", "document")
OUTCOME_TOKENS = {"TS": TS, "User": RESEARCH_USER}

Context = Sequence[tuple[str, str]]


def tool_result(title: str, url: str, snippet: str) -> str:
    """A tool result as the model reads it (rule 10): ``[title](url) snippet``."""
    source = f"[{title or url}]({url})" if url else ""
    return " ".join(part for part in (source, snippet) if part)


@dataclass(frozen=True)
class Example:
    ids: list[int]
    loss_mask: list[int]
    kind: str

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.loss_mask):
            raise ValueError("ids and loss_mask differ in length")


class _Builder:
    """Appends ids and their mask bits side by side."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.mask: list[int] = []

    def special(self, token: str, loss: bool = False) -> None:
        self.ids.append(special_id(self.tokenizer, token))
        self.mask.append(int(loss))

    def text(self, text: str, loss: bool = False) -> None:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        ids = self.tokenizer.encode(" " + text, add_special_tokens=False, split_special_tokens=True)
        self.ids.extend(ids)
        self.mask.extend([int(loss)] * len(ids))

    def context(self, context: Context) -> None:
        for speaker, text in context:
            if speaker not in SPEAKER_TOKENS:
                raise ValueError(f"speaker must be 'user' or 'model', not {speaker!r}")
            self.special(SPEAKER_TOKENS[speaker])
            self.text(text)

    def example(self, kind: str) -> Example:
        return Example(ids=self.ids, loss_mask=self.mask, kind=kind)


def _prefix(tokenizer: PreTrainedTokenizerFast, context: Context, response: str) -> _Builder:
    b = _Builder(tokenizer)
    b.context(context)
    b.special(SENTINEL)
    b.text(response)
    return b


def generative(tokenizer: PreTrainedTokenizerFast, context: Context, response: str) -> Example:
    """``CONTEXT<sentinel> response<eos>``; loss on the response and ``<eos>``."""
    b = _Builder(tokenizer)
    b.context(context)
    b.special(SENTINEL)
    b.text(response, loss=True)
    b.special(EOS, loss=True)
    return b.example("generative")


def document(tokenizer: PreTrainedTokenizerFast, title: str, body: str) -> Example:
    """`` title\nbody<eos>`` (rule 11); loss on every id."""
    b = _Builder(tokenizer)
    b.text(f"{title}\n{body}" if title else body, loss=True)
    b.special(EOS, loss=True)
    return b.example("document")


def generation_prompt(tokenizer: PreTrainedTokenizerFast, context: Context) -> list[int]:
    """``CONTEXT<sentinel>``: what the model continues with `` response<eos>`` (rule 4)."""
    b = _Builder(tokenizer)
    b.context(context)
    b.special(SENTINEL)
    return b.ids


def render_for_scoring(tokenizer: PreTrainedTokenizerFast, context: Context, response: str) -> list[int]:
    """``CONTEXT<sentinel> response``: the ids ``discriminative`` puts before ``<ATTRIBUTE><rating>``."""
    return _prefix(tokenizer, context, response).ids


def discriminative(
    tokenizer: PreTrainedTokenizerFast, context: Context, response: str, attribute: str, rating: int
) -> Example:
    """``CONTEXT<sentinel> response<ATTRIBUTE><rating>``; loss on the rating token only."""
    name = str(attribute).upper()
    if name not in ATTRIBUTES:
        raise ValueError(f"attribute must be one of {ATTRIBUTES}, not {attribute!r}")
    if isinstance(rating, bool) or rating not in RATING_TOKENS:
        raise ValueError(f"rating must be 0 or 1, not {rating!r}")
    b = _prefix(tokenizer, context, response)
    b.special(ATTRIBUTE_TOKENS[name])
    b.special(RATING_TOKENS[rating], loss=True)
    return b.example("discriminative")


def _outcome(b: _Builder, outcome: tuple[str, str]) -> None:
    who, text = outcome
    if who not in OUTCOME_TOKENS:
        raise ValueError(f"outcome must start with 'TS' or 'User', not {who!r}")
    b.special(OUTCOME_TOKENS[who], loss=True)
    b.text(text, loss=True)
    b.special(EOS, loss=True)


def research_first(
    tokenizer: PreTrainedTokenizerFast, context: Context, base: str, outcome: tuple[str, str]
) -> Example:
    """Task 1: ``CONTEXT<sentinel> base`` + ``<TS> query<eos>`` (``outcome`` ``("TS", query)``) or
    ``<User> base<eos>`` (``("User", base)``: no research needed); loss on the outcome only."""
    b = _prefix(tokenizer, context, base)
    _outcome(b, outcome)
    return b.example("research_query")


def research_query(tokenizer: PreTrainedTokenizerFast, context: Context, base: str, query: str) -> Example:
    """Task 1: ``CONTEXT<sentinel> base<TS> query<eos>``; loss on ``<TS>``, the query and ``<eos>``."""
    return research_first(tokenizer, context, base, ("TS", query))


def _steps(steps: Sequence[Step]) -> list[Step]:
    out = []
    for step in steps:
        if not isinstance(step, tuple) or len(step) != len(Step._fields):
            raise ValueError(f"a research step is a Step{Step._fields}, not {step!r}")
        out.append(Step(*step))
    return out


def _research(
    tokenizer: PreTrainedTokenizerFast, context: Context, base: str, steps: Sequence[Step]
) -> _Builder:
    b = _prefix(tokenizer, context, base)
    for step in _steps(steps):
        b.special(TS)
        b.text(step.query)
        b.special(SNIPPET)
        b.text(tool_result(step.title, step.url, step.snippet))
    return b


def research_prefix(
    tokenizer: PreTrainedTokenizerFast, context: Context, base: str, steps: Sequence[Step]
) -> list[int]:
    """What the model continues with ``<TS> query<eos>`` or ``<User> response<eos>`` (rule 9):
    the research loop's input at inference, the ids before a ``research_step`` outcome."""
    return _research(tokenizer, context, base, steps).ids


def research_step(
    tokenizer: PreTrainedTokenizerFast,
    context: Context,
    base: str,
    steps: Sequence[Step],
    outcome: tuple[str, str],
) -> Example:
    """Task 2: ``CONTEXT<sentinel> base`` + ``<TS> query<snippet> RESULT`` per step + outcome.

    ``outcome`` is ``("TS", next_query)`` or ``("User", response)`` and renders as
    ``<TS> next_query<eos>`` or ``<User> response<eos>``; the loss is on the outcome only.
    """
    if not steps:
        raise ValueError("research_step needs at least one (query, title, url, snippet) step")
    b = _research(tokenizer, context, base, steps)
    _outcome(b, outcome)
    return b.example("research_step")


def describe() -> dict:
    """What a dataset manifest records about the formats."""
    return {
        "format_version": FORMAT_VERSION,
        "kinds": list(KINDS),
        "special_tokens": list(SPECIAL_TOKENS),
        "attributes": list(ATTRIBUTES),
        "rules": __doc__,
    }
