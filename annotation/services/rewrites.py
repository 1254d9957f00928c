"""Rewrites (METHOD.md §4): a worker researches a model turn with the search tool in the
assignment's own toolset session and rewrites it, citing only what that session showed them.

``rewrite_research`` searches for a held assignment; ``research_session_check`` keeps everyone
else out of its session (the toolset asks through ``settings.TOOLSET_SESSION_CHECK``);
``rewrite_submit`` stores the answer, its rewrite and its citations, all or nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotation import hot_path, rules, selectors
from annotation.errors import AnnotationError, AssignmentConflict, AssignmentNotFound, InvalidAnswers
from annotation.models import Assignment, Campaign, Judgment, Rewrite
from annotation.services.assignments import (
    check_lease_held,
    locked_assignment,
    owned_assignment,
    submission_complete,
)
from dialogs.models import Candidate
from toolset.models import Tool
from toolset.services import ToolResult, ToolsetSessionRefused, toolset_query

if TYPE_CHECKING:
    from django.contrib.auth.models import User


# A Markdown link is ``[text](url)``: the text holds no "]", the URL may hold one level of
# parentheses (Wikipedia's "Mercury_(planet)"). This is the part from the "]" on; the "[" that
# opens the link is found by ``_markdown_links`` (a regex searching for both rescans the text
# after every "[", quadratic in a text full of them). Possessive: what the URL took is never
# given back, since a shorter URL cannot be followed by its closing ")".
_LINK_TARGET = re.compile(r"\]\((https?://(?:[^\s()]|\([^\s()]*+\))++)\)")
_BARE_URL = re.compile(r"https?://[^\s<>\[\]\"']+")
# Sentence punctuation after a bare URL is not part of it.
_URL_TRAILING = ".,;:!?"


@dataclass(frozen=True)
class RewriteSubmission:
    assignment: Assignment
    rewrite: Rewrite
    judgments: list[Judgment]
    created: bool  # False: the same submission was already stored


CANDIDATE_LABELS = ("correct", "incorrect")
# More than any rewrite of TURN_MAX_CHARS characters can sensibly cite.
CITATIONS_MAX = 100


def _markdown_links(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, url) of each Markdown link, left to right, in time linear in the text.

    The links ``re.finditer(r"\\[[^\\]]*\\]\\((url)\\)")`` would find, without its rescans: a link
    opened by a "[" ends at the first "]" after it, so when that "]" is no link's, neither is any
    "[" before it, and the search goes on after it.
    """
    position = 0
    while (start := text.find("[", position)) >= 0:
        close = text.find("]", start + 1)
        if close < 0:
            return
        target = _LINK_TARGET.match(text, close)
        if target is None:
            position = close + 1
            continue
        yield start, target.end(), target.group(1)
        position = target.end()


def cited_urls(text: str) -> list[str]:
    """Every URL a rewrite cites, in order, once: Markdown links' targets and bare URLs."""
    urls: list[str] = []
    rest: list[str] = []
    position = 0
    for start, end, url in _markdown_links(text):
        urls.append(url)
        rest += [text[position:start], " "]
        position = end
    rest.append(text[position:])
    for match in _BARE_URL.finditer("".join(rest)):
        url = match.group(0).rstrip(_URL_TRAILING)
        if url.endswith(")") and url.count("(") < url.count(")"):
            url = url[:-1]  # "(see https://x)": the parenthesis closes the sentence's
        urls.append(url)
    return list(dict.fromkeys(urls))


def rewrite_research(*, assignment_id: int, worker: User, query: str) -> list[ToolResult]:
    """Search the corpus for the worker's held assignment; the call is logged in its session.

    Raises ``AnnotationError``s like a submission (another worker's, expired) and
    ``toolset.services.ToolsetQueryError`` for a blank or too long query.
    """
    with transaction.atomic():
        assignment = _research_assignment(locked_assignment(assignment_id, worker))
    # Outside the assignment's lock: a search must not hold it.
    return toolset_query(
        session=selectors.research_session(assignment), query=query, actor_user=worker, tool=Tool.SEARCH
    )


def _research_assignment(found: hot_path.Found) -> Assignment:
    """The worker's assignment if research may be done on it now: a live lease on a rewrite item."""
    if found.assignment.item.campaign.kind != Campaign.Kind.GROUNDEDNESS_REWRITE:
        raise InvalidAnswers("Research is part of rewrite campaigns only.")
    check_lease_held(found)
    return found.assignment


def research_session_check(*, session: str, user: User) -> None:
    """Who may query the toolset in ``session`` (``settings.TOOLSET_SESSION_CHECK``; toolset imports
    no other app, so it asks through that dotted path).

    A research session (``assignment-<id>``) is its assignment's worker's alone, and only while
    they hold the lease on a rewrite item, as on the rewrite page: anyone else's queries there
    would show on that worker's page and move their "same query again → next result" cursor.
    Raises ``ToolsetSessionRefused`` with the status and message of the ``AnnotationError`` that
    says why; any other session is left alone.
    """
    if not session.startswith(selectors.RESEARCH_SESSION_PREFIX):
        return
    number = session.removeprefix(selectors.RESEARCH_SESSION_PREFIX)
    try:
        if not (number.isascii() and number.isdigit() and len(number) <= 18):
            raise AssignmentNotFound("There is no such assignment.")
        found = hot_path.find_assignment(int(number), now=timezone.now(), lock=False)
        _research_assignment(owned_assignment(found, user))
    except AnnotationError as exc:
        raise ToolsetSessionRefused(f"{session}: {exc}", status=exc.status) from None


def rewrite_submit(
    *,
    assignment_id: int,
    worker: User,
    claims_external: bool,
    common_knowledge: bool | None,
    rewrite: str = "",
    citations: Sequence[str] = (),
    candidate_labels: Mapping[int | str, str] | None = None,
) -> RewriteSubmission:
    """Store a worker's rewrite-task answer, all or nothing (METHOD.md §4).

    No external claims: the turn is good. Claims all known to be true: no research. Otherwise
    ``rewrite`` is required, must differ from the response, and every URL it cites (and every
    one of ``citations``) must be a result shown in the assignment's research session. The same
    submission again returns the stored one; lease and ownership rules are those of
    ``judgment_submit``. Judgments ``claims_external`` and ``common_knowledge`` (counted "no" when
    not asked) feed the consensus.
    """
    if not isinstance(claims_external, bool):
        raise InvalidAnswers("Does it make claims about the external world? Please answer yes or no.")
    if claims_external and not isinstance(common_knowledge, bool):
        raise InvalidAnswers("Do you know all of them to be true? Please answer yes or no.")
    labels = {str(candidate): str(value) for candidate, value in (candidate_labels or {}).items() if value}
    bad = sorted(value for value in labels.values() if value not in CANDIDATE_LABELS)
    if bad:
        raise InvalidAnswers(f"Candidates: {bad[0]!r} is not a label (correct or incorrect).")
    researched = claims_external and bool(common_knowledge) is False
    text = rewrite.replace("\r\n", "\n").strip() if researched else ""
    if len(text) > settings.TURN_MAX_CHARS:
        raise InvalidAnswers(
            f"Rewrite: at most {settings.TURN_MAX_CHARS:,} characters, like any turn; "
            f"yours has {len(text):,}."
        )
    citations = [str(c).strip() for c in citations if str(c).strip()] if researched else []
    if len(citations) > CITATIONS_MAX:
        raise InvalidAnswers(f"Citations: at most {CITATIONS_MAX}; you sent {len(citations)}.")
    # Parsed before the assignment's row is locked: nothing slow runs while the lock is held.
    urls = list(dict.fromkeys([*cited_urls(text), *citations]))
    submitted: dict[str, Any] = {
        rules.CLAIMS_EXTERNAL: claims_external,
        rules.COMMON_KNOWLEDGE: bool(common_knowledge) if claims_external else None,
        "rewrite": text,
        "citations": citations,
        "candidates": labels,
    }
    with transaction.atomic():
        locked = locked_assignment(assignment_id, worker)
        assignment = locked.assignment
        if assignment.state == Assignment.State.SUBMITTED:
            if assignment.submission == submitted:
                return RewriteSubmission(
                    assignment, assignment.rewrite, list(assignment.judgments.order_by("id")), created=False
                )
            raise AssignmentConflict("This assignment was already submitted with other answers.")
        check_lease_held(locked)
        item = assignment.item
        if item.campaign.kind != Campaign.Kind.GROUNDEDNESS_REWRITE:
            raise InvalidAnswers("This campaign is not a rewrite campaign; its items are not rewritten.")
        known = {
            str(pk) for pk in Candidate.objects.filter(turn_id=item.turn_id).values_list("pk", flat=True)
        }
        unknown = sorted(set(labels) - known) if item.turn_id else sorted(labels)
        if unknown:
            raise InvalidAnswers(f"Candidates: {unknown[0]} is not a sampled candidate of this turn.")
        calls = selectors.research_calls(assignment)
        if researched:
            if not text:
                raise InvalidAnswers(
                    "Rewrite: the claims need research, so a rewrite is required. "
                    "Replace unsupported claims with what the sources say."
                )
            if text == item.response.replace("\r\n", "\n").strip():
                raise InvalidAnswers(
                    "Rewrite: it is the same as the response; change what the sources do not support."
                )
            shown = {result.get("url") for call in calls for result in call.results if result.get("url")}
            for url in urls:
                if url not in shown:
                    raise InvalidAnswers(
                        f"{url} was not among the search results shown for this item; "
                        "cite only sources you found in the research panel."
                    )
        values: dict[str, tuple[str, str | None]] = {
            rules.CLAIMS_EXTERNAL: (rules.YES if claims_external else rules.NO,) * 2,
            rules.COMMON_KNOWLEDGE: (
                (rules.YES if common_knowledge else rules.NO,) * 2 if claims_external else (rules.NO, None)
            ),
        }
        judgments = submission_complete(
            assignment=assignment, worker=worker, values=values, submission=submitted
        )
        stored = Rewrite.objects.create(
            assignment=assignment,
            claims_external=claims_external,
            common_knowledge=bool(common_knowledge) and claims_external,
            text=text,
            cited_urls=urls,
            tool_call_ids=[call.pk for call in calls],
            candidate_labels=labels,
        )
    return RewriteSubmission(assignment, stored, judgments, created=True)
