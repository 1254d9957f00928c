"""What sample-and-rank chooses from and how it chooses (METHOD.md §6, step 3): the settings, a
candidate with its likelihood and attribute scores, the answer, and ``rank``. Pure Python: the
sampling and scoring that fill the candidates in are ``trainer.sampling``, which re-exports these
names (``sampling.rank``, ``sampling.Candidate``, …) as the one place callers import them from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RANKED_ATTRIBUTES = ("SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE")


@dataclass
class Settings:
    candidates: int = 16
    top_k: int = 40
    max_new_tokens: int = 48
    max_prompt_tokens: int = 384
    length_penalty: float = 1.0
    safety_threshold: float = 0.5


@dataclass
class Candidate:
    index: int
    text: str
    ids: list[int]
    length: int  # response tokens, <eos> not counted
    finished: bool  # ended with <eos> (else cut at max_new_tokens)
    log_likelihood: float  # sum over the response tokens and <eos>
    scores: dict[str, float] = field(default_factory=dict)  # P(attribute = 1)
    rank_score: float = -math.inf
    dropped: str = ""  # why it could not be chosen

    def as_scores(self) -> dict[str, Any]:
        """What ``dialogs.Candidate.scores`` keeps."""
        out: dict[str, Any] = {
            "log_likelihood": round(self.log_likelihood, 4),
            "mean_log_likelihood": round(self.log_likelihood / (self.length + 1), 4),
            "tokens": self.length,
            "finished": self.finished,
            "rank_score": None if math.isinf(self.rank_score) else round(self.rank_score, 4),
        }
        for name, value in self.scores.items():
            out[f"P({name})"] = round(value, 4)
        if self.dropped:
            out["dropped"] = self.dropped
        return out


@dataclass
class Answer:
    candidates: list[Candidate]
    # The candidate to send; None when every candidate with text was predicted unsafe: none may be
    # sent, and the caller answers with a safe fallback reply (``trainer.inference``).
    chosen: int | None
    ranking: str  # "likelihood" | "discriminators"
    note: str = ""

    @property
    def text(self) -> str:
        """The chosen candidate's text; empty when none was chosen."""
        return "" if self.chosen is None else self.candidates[self.chosen].text


def rank(candidates: list[Candidate], *, discriminators: bool, settings: Settings) -> Answer:
    """Choose a candidate (METHOD.md §6); every candidate keeps its rank score or why it was dropped.
    With discriminators, when every candidate with text is under the safety threshold none is
    chosen (``chosen`` None), never the least unsafe of them."""
    for candidate in candidates:
        if candidate.length == 0:
            candidate.dropped = "empty"
    if not discriminators:
        for candidate in candidates:
            if not candidate.dropped:
                candidate.rank_score = (
                    candidate.log_likelihood / (candidate.length + 1) ** settings.length_penalty
                )
        ranking, note = "likelihood", ""
    else:
        ranking, note = "discriminators", ""
        for candidate in candidates:
            if candidate.dropped:
                continue
            if 1 - candidate.scores["UNSAFE"] < settings.safety_threshold:
                candidate.dropped = (
                    f"P(UNSAFE=0) {1 - candidate.scores['UNSAFE']:.2f} < {settings.safety_threshold}"
                )
                continue
            s = candidate.scores
            candidate.rank_score = 3 * s["SENSIBLE"] + s["SPECIFIC"] + s["INTERESTING"]
        if all(c.dropped for c in candidates) and any(c.dropped != "empty" for c in candidates):
            # Even the safest is predicted unsafe: sending it would be sending an unsafe answer.
            note = (
                f"no candidate passed the safety threshold (P(UNSAFE=0) >= {settings.safety_threshold}): "
                "none was chosen"
            )
            return Answer(candidates, None, ranking, note)
    usable = [c for c in candidates if not c.dropped]
    if not usable:
        return Answer(candidates, 0, ranking, "every candidate was empty")
    best = max(usable, key=lambda c: c.rank_score)
    return Answer(candidates, best.index, ranking, note)
