"""What raters are asked in each campaign kind, with the guidance of METHOD.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from annotation import rules
from annotation.models import Campaign


@dataclass(frozen=True)
class Question:
    attribute: str
    label: str  # short name: the group label of the buttons ("Sensible")
    prompt: str
    guidance: str
    # The cascade: asked only when this attribute was asked and answered "yes"; when not asked the
    # question counts "no" (annotation.rules.cascade).
    requires_yes: str | None = None
    maybe_label: str = "Maybe"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SSI = (
    Question(
        "sensible",
        "Sensible",
        "Does the response make sense in this context?",
        "It is reasonable in context and does not contradict anything said earlier, by either side. "
        "If in doubt, choose No.",
    ),
    Question(
        "specific",
        "Specific",
        "Is the response specific to this context?",
        "It fits this context, not a reply that would fit almost anywhere: “Me too” is not specific; "
        "“Me too. I love Eurovision songs” is.",
        requires_yes="sensible",
    ),
    Question(
        "interesting",
        "Interesting",
        "Is the response interesting?",
        "It would catch someone's attention or arouse their curiosity: unexpected, witty or insightful.",
        requires_yes="specific",
    ),
)

GROUNDEDNESS_EVAL = (
    Question(
        "understandable",
        "Understandable",
        "Is the response understandable?",
        "You can tell what it says, even if you disagree with it.",
    ),
    Question(
        "claims_external",
        "External claims",
        "Does it make claims about the external world?",
        "Facts about the world, not about the speaker's own persona or people who are not publicly known. "
        "A URL counts as a claim. If unsure, answer Yes.",
    ),
    Question(
        rules.WELL_KNOWN,
        "Well known",
        "Is every claim well known (common knowledge)?",
        "Facts nearly everyone knows without looking them up, such as “Paris is the capital of France”. "
        "Well-known facts need no citation: a response whose claims are all well known is not counted "
        "in citation accuracy. If any claim is one you would check, answer No.",
        requires_yes="claims_external",
    ),
    Question(
        "factually_correct",
        "Factually correct",
        "Is it factually correct?",
        "Check the claims with the toolset. A link that does not support the claim means No.",
        maybe_label="Not sure",
    ),
    Question(
        "cites_source",
        "Cites a source",
        "Does it cite a source URL?",
        "A link to an open-web source, inline or at the end of the message. Well-known facts need no "
        "citation; answer whether it cites one all the same.",
    ),
)

HELPFULNESS = (
    Question(
        "helpful",
        "Helpful",
        "Is the response helpful?",
        "It holds correct information (check it with the toolset) that you find helpful. "
        "A broken link or unsupported information is not helpful.",
    ),
    Question(
        "role_consistent",
        "Role consistent",
        "Is it consistent with the role?",
        "It is something an agent in this role would say.",
    ),
)

FIXED = {
    Campaign.Kind.SSI: SSI,
    Campaign.Kind.GROUNDEDNESS_EVAL: GROUNDEDNESS_EVAL,
    Campaign.Kind.HELPFULNESS: HELPFULNESS,
}
DEFAULT_RATERS = {
    Campaign.Kind.SSI: 5,
    Campaign.Kind.SAFETY: 3,
    Campaign.Kind.GROUNDEDNESS_REWRITE: 3,
    Campaign.Kind.GROUNDEDNESS_EVAL: 3,
    Campaign.Kind.HELPFULNESS: 3,
    Campaign.Kind.HUMAN_RESPONSE: 1,  # one writer per context
    Campaign.Kind.PAIRWISE: 3,
}


def question_gates(questions: tuple[Question, ...]) -> tuple[tuple[str, str | None], ...]:
    """``(attribute, requires_yes)`` of each question, in order: the gates ``annotation.rules.cascade``
    applies, in the rating page, the API and judgment imports alike."""
    return tuple((q.attribute, q.requires_yes) for q in questions)


def campaign_questions(campaign: Campaign, objectives: list[Any] | None = None) -> tuple[Question, ...]:
    """The questions of ``campaign``; safety campaigns ask one per chosen objective."""
    if campaign.kind == Campaign.Kind.SAFETY:
        chosen = objectives if objectives is not None else list(campaign.objectives.all())
        return tuple(
            Question(o.slug, o.name, f"Does the response violate this objective: {o.name}?", o.guidance)
            for o in chosen
        )
    return FIXED.get(campaign.kind, ())
