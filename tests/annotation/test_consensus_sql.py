"""The set-based consensus (one SQL statement) agrees with the pure rules on random judgments."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from annotation import rules
from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment
from annotation.services import assignments, campaigns, consensus
from tests.annotation.test_rules import counted

pytestmark = pytest.mark.django_db

VALUES = (rules.YES, rules.NO, rules.MAYBE)


def random_answers(rng: random.Random, kind: str) -> dict[str, str]:
    if kind == Campaign.Kind.SSI:
        return {attribute: rng.choice(VALUES) for attribute in rules.SSI_ATTRIBUTES}
    return {attribute: rng.choice(VALUES) for attribute in rules.GROUNDEDNESS_EVAL_ATTRIBUTES}


@pytest.mark.parametrize(("kind", "raters"), [("ssi", 5), ("ssi", 3), ("groundedness_eval", 3)])
def test_sql_consensus_equals_the_rules(kind: str, raters: int) -> None:
    rng = random.Random(f"{kind}-{raters}")
    campaign = campaigns.campaign_create(name="c", kind=kind, raters_per_item=raters, empty=True)
    workers = [User.objects.create(username=f"w{i}") for i in range(raters + 2)]
    expected: dict[str, dict[str, rules.Label]] = {}
    for n in range(60):
        # Some items are incomplete, some have more raters than the campaign asks for (imported).
        ratings = [random_answers(rng, kind) for _ in range(rng.choice([1, raters - 1, raters, raters + 2]))]
        item = Item.objects.create(
            campaign=campaign, key=f"k{n}", response="r", open_slots=0, judgment_count=len(ratings)
        )
        for worker, answers in zip(workers, ratings, strict=False):
            assignment = Assignment.objects.create(
                item=item, worker=worker, state=Assignment.State.SUBMITTED, expires_at=timezone.now()
            )
            values = assignments.judgment_values(campaign=campaign, answers=answers)
            Judgment.objects.bulk_create(
                Judgment(assignment=assignment, item=item, attribute=a, value=v, raw_value=raw or "")
                for a, (v, raw) in values.items()
            )
        cascaded = [
            {a: v for a, (v, _) in assignments.judgment_values(campaign=campaign, answers=r).items()}
            for r in ratings[: len(workers)]
        ]
        counts = counted(cascaded, list(cascaded[0]))
        expected[item.key] = rules.labels_from_counts(
            counts, attributes=list(counts), raters=max(raters, len(cascaded))
        )

    consensus.campaign_aggregate(campaign=campaign, chunk=7)

    stored: dict[str, dict[str, tuple]] = {}
    for label in ConsensusLabel.objects.select_related("item"):
        stored.setdefault(label.item.key, {})[label.attribute] = (
            label.label,
            label.yes,
            label.no,
            label.maybe,
            pytest.approx(label.yes_fraction),
        )
    assert stored == {
        key: {a: (lab.label, lab.yes, lab.no, lab.maybe, lab.yes_fraction) for a, lab in labels.items()}
        for key, labels in expected.items()
    }
