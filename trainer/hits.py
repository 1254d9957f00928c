"""Held-out response ranking (Hits@1 of 20), the core shared by evaluations
(``trainer.services.evaluation_runs``) and the end of a training job
(``trainer.services.training_jobs``). Pure: no Django, no torch; the model enters as a function
that scores ``(context, response)`` pairs (``sampling.Scorer.response_log_likelihoods``: the mean
token log-likelihood of the response and its ``<eos>`` after the context).

For each case with a reference (its true next turn), the reference and ``candidates - 1`` others
are ranked by that score; Hits@1 is the share of cases whose reference ranks first, strictly above
every other (a tie is a miss). The others are different texts drawn from the references of cases
of *other* groups (another dialog), seeded by ``seed_key`` and the case's key, so every model
scored with the same seed key meets the same candidates. Chance is ``1 / candidates`` (5 % for 20).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HITS_CANDIDATES = 20  # the true next turn and 19 others
HELD_OUT_CONTEXTS = 150  # validation turns a training job ranks (``held_out_cases``)
# What seeds the draws of a training job's ranking: the same for every job, so every model whose
# datasets hold the same validation dialogs meets the same candidates.
HELD_OUT_SEED = "validation"

Turns = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Case:
    """One held-out context: ``key`` names it (and seeds its draw), ``group`` is what the other
    candidates must not come from (its dialog; the key itself when every case is its own)."""

    key: str
    context: Turns
    reference: str
    group: str


def hits_at_1(
    cases: Sequence[Case],
    score: Callable[[list[tuple[Turns, str]]], list[float]],
    *,
    seed_key: str,
    candidates: int = HITS_CANDIDATES,
) -> dict[str, Any]:
    """``{"hits_at_1", "hits_candidates", "hits_contexts"}`` over the ``cases`` with a reference.

    With fewer than ``candidates`` different references every case gets all the others it may
    have; with fewer than 2, there is no figure (``hits_at_1`` None). ``score`` gets every pair at
    once (it batches) and returns one number per pair, higher is more likely."""
    with_reference = [c for c in cases if c.reference.strip()]
    pool = list(dict.fromkeys(c.reference for c in with_reference))
    others = min(candidates, len(pool)) - 1
    if others < 1:
        return {"hits_at_1": None, "hits_candidates": 0, "hits_contexts": 0}
    pairs: list[tuple[Turns, str]] = []
    sizes: list[int] = []
    for case in with_reference:
        allowed = list(
            dict.fromkeys(
                c.reference for c in with_reference if c.group != case.group and c.reference != case.reference
            )
        )
        rng = random.Random(f"{seed_key}:{case.key}")  # noqa: S311 - a draw, not a secret
        drawn = rng.sample(allowed, min(others, len(allowed)))
        pairs += [(case.context, response) for response in (case.reference, *drawn)]
        sizes.append(1 + len(drawn))
    scores = score(pairs)
    if len(scores) != len(pairs):
        raise ValueError(f"hits_at_1: the scorer gave {len(scores)} scores for {len(pairs)} pairs")
    hits, start = 0, 0
    for size in sizes:
        if size > 1 and scores[start] > max(scores[start + 1 : start + size]):
            hits += 1
        start += size
    return {
        "hits_at_1": round(hits / len(with_reference), 4),
        "hits_candidates": others + 1,
        "hits_contexts": len(with_reference),
    }


def pair_key(context: Iterable[Mapping[str, Any]], response: str) -> tuple[str, ...]:
    """What makes two examples the same turn: the texts of the context's turns and the response."""
    return (*(str(turn["text"]) for turn in context), str(response))


def held_out_cases(
    rows: Iterable[Mapping[str, Any]],
    *,
    most: int = HELD_OUT_CONTEXTS,
    seen: Collection[tuple[str, ...]] = (),
) -> list[Case]:
    """The cases of a dataset's validation rows (``trainer.records`` columns ``kind``, ``dialog``,
    ``context``, ``response``): its ``generative`` examples less those whose turn (``pair_key``)
    is in ``seen`` (the training split's: a corpus may hold the same conversation twice under two
    ids, and the split is by id), at most ``most`` of them, chosen in the order of the sha256 of
    their dialog and response (a fixed, spread-out sample that does not depend on database ids),
    each grouped by its dialog."""
    generative = {
        f"{row['dialog']}\n{row['response']}": row
        for row in rows
        if row.get("kind") == "generative" and pair_key(row["context"], row["response"]) not in seen
    }
    keys = sorted(generative, key=lambda key: hashlib.sha256(key.encode()).digest())[:most]
    return [
        Case(
            key=key,
            context=[(str(turn["speaker"]), str(turn["text"])) for turn in generative[key]["context"]],
            reference=str(generative[key]["response"]),
            group=str(generative[key]["dialog"]),
        )
        for key in keys
    ]
