"""The consensus the database computes (``annotation.services.consensus``: counts in SQL, labels
by the rules) is the one the pure rules (``annotation.rules``) give from the raters' answers, label
for label, for every campaign kind: random campaigns, items with fewer judgments than raters (which
get no labels at all), the SSI cascade, "maybe" and "not sure", several safety objectives, side by
side's a, b or tie, and judgments that come in two rounds (the second recomputation relabels only
the items where something changed, a lost label among them, and must still be right). Then the
issue's cases by hand: an item missing judgments (a campaign closed early, consensus run
mid-campaign, an import with fewer raters) has no labels, and labels an incomplete item kept from
rules version 1 are removed.

The file runs on SQLite too (``scripts/test.sh``): the statement must run on both databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation import rules
from annotation.models import Assignment, Campaign, ConsensusLabel, Item, Judgment, SafetyObjective
from annotation.questions import campaign_questions
from annotation.services import assignments, campaigns, consensus
from tests.annotation.evaluation_helpers import make_set

pytestmark = pytest.mark.django_db

VALUES = st.sampled_from(rules.VALUES)
OBJECTIVES = ("harm", "bias", "misinformation")  # seeded by the migrations
ANSWER = st.fixed_dictionaries
Answers = dict[str, str]


@dataclass(frozen=True)
class Drawn:
    kind: str
    raters: int  # per item
    objectives: tuple[str, ...]
    first: list[list[Answers]]  # per item, the answers of its raters in the first round
    later: list[list[Answers]]  # per item, the answers of the raters who come after it


def rewrite_answers() -> st.SearchStrategy[Answers]:
    """The two questions of a rewrite: common knowledge is asked only of external claims."""
    return st.one_of(
        st.just({rules.CLAIMS_EXTERNAL: rules.NO}),
        ANSWER(
            {
                rules.CLAIMS_EXTERNAL: st.just(rules.YES),
                rules.COMMON_KNOWLEDGE: st.sampled_from(["yes", "no"]),
            }
        ),
    )


@st.composite
def drawn_campaigns(draw: st.DrawFn) -> Drawn:
    # Every kind whose items are judged (a human baseline's are written: nothing to label).
    kind = draw(st.sampled_from([k for k in Campaign.Kind.values if k != Campaign.Kind.HUMAN_RESPONSE]))
    raters = draw(st.integers(1, 5))
    objectives: tuple[str, ...] = ()
    if kind == Campaign.Kind.PAIRWISE:  # a, b or a tie, stored as yes, no or maybe (rules.PAIRWISE_VALUES)
        answers = ANSWER({rules.A_BETTER: VALUES})
    elif kind == Campaign.Kind.SAFETY:
        objectives = tuple(draw(st.lists(st.sampled_from(OBJECTIVES), min_size=1, max_size=3, unique=True)))
        answers = ANSWER(dict.fromkeys(objectives, VALUES))
    elif kind == Campaign.Kind.GROUNDEDNESS_REWRITE:
        answers = rewrite_answers()
    else:
        attributes = [q.attribute for q in campaign_questions(Campaign(kind=kind))]
        answers = ANSWER(dict.fromkeys(attributes, VALUES))
    first, later = [], []
    for _ in range(draw(st.integers(1, 4))):
        total = draw(st.integers(0, raters))  # fewer judgments than raters, or none, too
        now = draw(st.integers(0, total))
        ratings = draw(st.lists(answers, min_size=total, max_size=total))
        first.append(ratings[:now])
        later.append(ratings[now:])
    return Drawn(kind, raters, objectives, first, later)


def counted_values(campaign: Campaign, answers: Answers) -> dict[str, tuple[str, str | None]]:
    """What a submission stores: attribute → (value counted, value answered)."""
    if campaign.kind == Campaign.Kind.PAIRWISE:  # as evaluation_tasks.pairwise_submit stores them
        return {rules.A_BETTER: (answers[rules.A_BETTER],) * 2}
    if campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE:  # as rewrites.rewrite_submit stores them
        knows = answers.get(rules.COMMON_KNOWLEDGE)
        return {
            rules.CLAIMS_EXTERNAL: (answers[rules.CLAIMS_EXTERNAL],) * 2,
            rules.COMMON_KNOWLEDGE: (knows, knows) if knows else (rules.NO, None),
        }
    return assignments.judgment_values(campaign=campaign, answers=answers)


def store(campaign: Campaign, item: Item, workers: list[User], ratings: list[Answers]) -> None:
    """Submitted assignments and their judgments, as the submission services leave them."""
    now = timezone.now()
    for worker, answers in zip(workers, ratings, strict=False):
        assignment = Assignment.objects.create(
            item=item, worker=worker, state=Assignment.State.SUBMITTED, expires_at=now, submitted_at=now
        )
        Judgment.objects.bulk_create(
            Judgment(assignment=assignment, item=item, attribute=a, value=value, raw_value=raw or "")
            for a, (value, raw) in counted_values(campaign, answers).items()
        )
    item.judgment_count += len(ratings)
    item.save(update_fields=["judgment_count"])


def expected_labels(
    campaign: Campaign, ratings: list[Answers], objectives: tuple[str, ...]
) -> dict[str, rules.Label]:
    """The rules applied to the raters' answers, one rater at a time: nothing of the database."""
    values = [{a: value for a, (value, _) in counted_values(campaign, r).items()} for r in ratings]
    counts: dict[str, rules.Counts] = {}
    for rating in values:
        for attribute, value in rating.items():
            counts[attribute] = counts.get(attribute, rules.Counts()).add(value)
    raters = campaign.raters_per_item
    if campaign.kind == Campaign.Kind.SSI:
        return rules.ssi_labels_from_counts(counts, raters=raters)
    if campaign.kind == Campaign.Kind.SAFETY:
        everyone_no = sum(all(v == rules.NO for v in rating.values()) for rating in values)
        return rules.safety_labels_from_counts(
            counts, objectives=objectives, raters=raters, all_no_raters=everyone_no
        )
    if campaign.kind == Campaign.Kind.PAIRWISE:
        return rules.pairwise_labels_from_counts(counts[rules.A_BETTER], raters=raters)
    if campaign.kind == Campaign.Kind.GROUNDEDNESS_REWRITE:
        return {
            rules.CLAIMS_EXTERNAL: rules.majority_label(
                rules.CLAIMS_EXTERNAL, counts[rules.CLAIMS_EXTERNAL], raters=raters
            ),
            rules.COMMON_KNOWLEDGE: rules.common_knowledge_label(
                counts[rules.COMMON_KNOWLEDGE], raters=raters
            ),
        }
    attributes = [q.attribute for q in campaign_questions(campaign)]
    return rules.labels_from_counts(counts, attributes=attributes, raters=raters)


def stored_labels(campaign: Campaign) -> dict[str, dict[str, tuple]]:
    stored: dict[str, dict[str, tuple]] = {}
    for label in ConsensusLabel.objects.filter(item__campaign=campaign).select_related("item"):
        stored.setdefault(label.item.key, {})[label.attribute] = (
            label.label,
            label.yes,
            label.no,
            label.maybe,
            pytest.approx(label.yes_fraction),
        )
    return stored


def as_rows(labels: dict[str, rules.Label]) -> dict[str, tuple]:
    return {a: (lab.label, lab.yes, lab.no, lab.maybe, lab.yes_fraction) for a, lab in labels.items()}


@contextmanager
def rolled_back() -> Iterator[None]:
    """Each example in a transaction of its own, rolled back: examples do not see each other."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=drawn_campaigns(), chunk=st.integers(1, 5), lost=st.integers(0, 99))
def test_the_database_labels_every_item_as_the_rules_do(drawn: Drawn, chunk: int, lost: int) -> None:
    with rolled_back():
        campaign = campaigns.campaign_create(
            name="property",
            kind=drawn.kind,
            raters_per_item=drawn.raters,
            objectives=list(drawn.objectives) or None,
            empty=True,
            # Side-by-side campaigns are an evaluation set's only.
            evaluation_set=make_set(contexts=1) if drawn.kind == Campaign.Kind.PAIRWISE else None,
        )
        workers = [User.objects.create(username=f"w{n}") for n in range(drawn.raters)]
        items = [
            Item.objects.create(campaign=campaign, key=f"k{n}", response="r", open_slots=0)
            for n in range(len(drawn.first))
        ]
        for item, ratings in zip(items, drawn.first, strict=True):
            store(campaign, item, workers, ratings)

        consensus.campaign_aggregate(campaign=campaign, chunk=chunk)
        # Only complete items are labelled: every one of the campaign's raters answered.
        assert stored_labels(campaign) == {
            item.key: as_rows(expected_labels(campaign, ratings, drawn.objectives))
            for item, ratings in zip(items, drawn.first, strict=True)
            if len(ratings) == drawn.raters
        }

        # One label lost (say an admin deleted it): its item is labelled again whole, since a
        # safety item's labels depend on each other.
        stored = list(ConsensusLabel.objects.filter(item__campaign=campaign).order_by("item", "attribute"))
        if stored:
            stored[lost % len(stored)].delete()
        # The second round: the later raters of each item, then the item's consensus alone (as
        # its last judgment queues it) or the campaign's again, which relabels what changed.
        for n, (item, ratings) in enumerate(zip(items, drawn.later, strict=True)):
            done = len(drawn.first[n])
            store(campaign, item, workers[done:], ratings)
            if n % 2:
                consensus.item_aggregate(item_id=item.pk)
        consensus.campaign_aggregate(campaign=campaign, chunk=chunk)
        assert stored_labels(campaign) == {
            item.key: as_rows(expected_labels(campaign, first + later, drawn.objectives))
            for item, first, later in zip(items, drawn.first, drawn.later, strict=True)
            if len(first + later) == drawn.raters
        }


# --- incomplete items, by hand (the cases) ----------------------------------------------


def rated_item(campaign: Campaign, key: str, ratings: list[Answers]) -> Item:
    item = Item.objects.create(campaign=campaign, key=key, response="r", open_slots=0)
    workers = [User.objects.get_or_create(username=f"rater-{n}")[0] for n in range(len(ratings))]
    store(campaign, item, workers, ratings)
    return item


def test_an_ssi_item_two_of_five_raters_found_good_has_no_label_until_all_five_answered() -> None:
    campaign = campaigns.campaign_create(name="closed early", kind="ssi", empty=True)
    yes = {"sensible": "yes", "specific": "yes", "interesting": "yes"}
    item = rated_item(campaign, "two-of-five", [yes, yes])

    labelled = consensus.campaign_aggregate(campaign=campaign)  # an admin runs consensus mid-campaign

    assert labelled == 0
    assert not ConsensusLabel.objects.exists()  # not "0" (yes-fraction 1.0): no label at all
    store(campaign, item, [User.objects.create(username=f"late-{n}") for n in range(3)], [yes] * 3)
    consensus.item_aggregate(item_id=item.pk)
    assert stored_labels(campaign)["two-of-five"]["sensible"][:4] == (1, 5, 0, 0)


def test_a_safety_item_one_of_three_raters_called_harmful_is_not_labelled_unsafe() -> None:
    campaign = campaigns.campaign_create(
        name="one of three", kind="safety", empty=True, objectives=["harm", "bias"]
    )
    rated_item(campaign, "one-of-three", [{"harm": "no", "bias": "no"}])
    rated_item(campaign, "all-three", [{"harm": "no", "bias": "no"}] * 3)

    consensus.campaign_aggregate(campaign=campaign)

    stored = stored_labels(campaign)
    assert set(stored) == {"all-three"}
    assert stored["all-three"]["unsafe"][0] == 0


def test_labels_an_incomplete_item_kept_from_rules_version_1_are_removed_by_the_next_run() -> None:
    campaign = campaigns.campaign_create(name="old labels", kind="ssi", raters_per_item=3, empty=True)
    item = rated_item(campaign, "incomplete", [{"sensible": "no"}])
    ConsensusLabel.objects.create(
        item=item, attribute="sensible", label=0, yes=0, no=1, maybe=0, yes_fraction=0.0, rules_version="1"
    )
    complete = rated_item(campaign, "complete", [{"sensible": "no"}] * 3)
    # A complete item whose rater was deleted with their judgments: incomplete again.
    short = rated_item(campaign, "rater-deleted", [{"sensible": "no"}] * 3)
    consensus.campaign_aggregate(campaign=campaign)
    assert ConsensusLabel.objects.filter(item=short).count() == 3
    Assignment.objects.filter(item=short).first().delete()

    consensus.campaign_aggregate(campaign=campaign)

    assert set(stored_labels(campaign)) == {"complete"}
    assert ConsensusLabel.objects.filter(item=complete, rules_version=rules.RULES_VERSION).count() == 3


def test_a_recomputation_costs_the_same_few_queries_whatever_the_number_of_items(
    django_assert_max_num_queries,
) -> None:
    campaign = campaigns.campaign_create(name="queries", kind="ssi", raters_per_item=2, empty=True)
    for n in range(30):
        rated_item(campaign, f"k{n}", [{"sensible": "no"}] * (1 + n % 2))  # half of them incomplete

    # The first computation's plain INSERT runs in a savepoint here, inside the test's transaction
    # (two statements more than in a task, where it is a transaction of its own).
    with django_assert_max_num_queries(8):
        assert consensus.campaign_aggregate(campaign=campaign) == 15

    assert len(stored_labels(campaign)) == 15


def test_a_first_computation_upserts_when_an_items_labels_were_stored_meanwhile() -> None:
    # A first computation writes with a plain INSERT (no label stored when it counted); should an
    # item's own consensus (its last judgment's task) store labels between the count and the write,
    # the INSERT fails whole and is made again as an upsert, with the labels of the later count.
    campaign = campaigns.campaign_create(name="raced", kind="ssi", raters_per_item=3, empty=True)
    item = rated_item(campaign, "raced", [{"sensible": "no"}] * 3)
    consensus.item_aggregate(item_id=item.pk)  # the item's own task, "meanwhile"
    ConsensusLabel.objects.filter(item=item).update(label=1, yes=3, no=0)  # as counted then
    labelling = consensus._Labelling(campaign)
    number = labelling.index(3, "0 3 0 11:interesting0 3 0 8:sensible0 3 0 8:specific")
    assert number is not None

    consensus._store_labels(labelling, {item.pk: number}, stored=False)

    assert stored_labels(campaign)["raced"]["sensible"][:4] == (0, 0, 3, 0)


def test_items_with_the_same_counts_share_one_labelling_equal_to_the_rules() -> None:
    campaign = campaigns.campaign_create(name="shared", kind="ssi", raters_per_item=3, empty=True)
    labelling = consensus._Labelling(campaign)
    counts = "2 1 0 11:interesting2 0 1 8:sensible0 3 0 8:specific"

    first, again = labelling.index(3, counts), labelling.index(3, counts)
    more_raters = labelling.index(4, counts)  # the same counts, but four raters: incomplete

    assert first == again is not None
    assert more_raters is None
    assert labelling.table[first] == rules.ssi_labels_from_counts(
        {
            "interesting": rules.Counts(yes=2, no=1),
            "sensible": rules.Counts(yes=2, maybe=1),
            "specific": rules.Counts(no=3),
        },
        raters=3,
    )


@pytest.mark.parametrize("kind", ["ssi", "safety"])
def test_a_recomputation_of_an_unchanged_campaign_rewrites_no_label(kind: str) -> None:
    # An item is relabelled when its counts differ from its stored labels', compared as one string
    # per item: the safety rows, counted apart, and an objective named after them ("zeal" sorts
    # after "unsafe") must come in the same order on both sides.
    SafetyObjective.objects.create(slug="zeal", name="Zeal", guidance="g")
    objectives = ["harm", "zeal"] if kind == "safety" else None
    campaign = campaigns.campaign_create(
        name="unchanged", kind=kind, raters_per_item=3, empty=True, objectives=objectives
    )
    answers = (
        [{"harm": "no", "zeal": "no"}, {"harm": "yes", "zeal": "no"}, {"harm": "maybe", "zeal": "no"}]
        if kind == "safety"
        else [{"sensible": "yes", "specific": "yes", "interesting": "no"}, {"sensible": "no"}] * 2
    )
    for n in range(4):
        rated_item(campaign, f"k{n}", answers[n % 2 :][:2] + answers[:1])  # three raters
    consensus.campaign_aggregate(campaign=campaign)
    written = dict(ConsensusLabel.objects.values_list("pk", "computed_at"))

    consensus.campaign_aggregate(campaign=campaign)

    assert len(written) == 4 * (4 if kind == "safety" else 3)
    assert dict(ConsensusLabel.objects.values_list("pk", "computed_at")) == written


def test_a_recomputation_of_an_unchanged_side_by_side_campaign_rewrites_no_label() -> None:
    # The stored b_better row is a_better's counts swapped; the counting query swaps them too, so
    # an unchanged item is not labelled again (and a lost b_better label would be seen).
    campaign = Campaign.objects.create(name="pairs", kind=Campaign.Kind.PAIRWISE, raters_per_item=3)
    for n, values in enumerate([("yes", "yes", "no"), ("no", "maybe", "no"), ("yes", "no", "maybe")]):
        rated_item(campaign, f"p{n}", [{rules.A_BETTER: value} for value in values])
    consensus.campaign_aggregate(campaign=campaign)
    written = dict(ConsensusLabel.objects.values_list("pk", "computed_at"))

    consensus.campaign_aggregate(campaign=campaign)

    assert len(written) == 3 * 2  # a_better and b_better of each item
    assert dict(ConsensusLabel.objects.values_list("pk", "computed_at")) == written
    ConsensusLabel.objects.filter(attribute=rules.B_BETTER, item__key="p0").delete()
    consensus.campaign_aggregate(campaign=campaign)
    assert stored_labels(campaign)["p0"][rules.B_BETTER][:4] == (0, 1, 2, 0)


# --- the link from a label to its item (kept by triggers, migration 0009) ---------------------


def checked(write: Callable[[], object]) -> None:
    """``write`` in a savepoint, then the deferred constraints checked (rolled back on failure)."""
    with transaction.atomic():
        write()
        connection.check_constraints()


def test_a_label_needs_its_item_and_an_item_keeps_its_labels_until_they_are_deleted() -> None:
    campaign = campaigns.campaign_create(name="linked", kind="ssi", raters_per_item=3, empty=True)
    item = rated_item(campaign, "linked", [{"sensible": "no"}] * 3)
    consensus.campaign_aggregate(campaign=campaign)
    missing = Item.objects.order_by("-pk").first().pk + 1
    # Each write is refused, at once or, were the link a deferred foreign key, when checked.
    broken = [
        lambda: ConsensusLabel.objects.create(  # an item that does not exist
            item_id=missing, attribute="sensible", label=0, yes=0, no=3, maybe=0, yes_fraction=0.0
        ),
        lambda: ConsensusLabel.objects.filter(item=item).update(item_id=missing),  # nor move to one
        lambda: connection.cursor().execute(  # an item deleted, its labels left behind
            "DELETE FROM annotation_item WHERE id = %s", [item.pk]
        ),
    ]
    for write in broken:
        with pytest.raises(IntegrityError):
            checked(write)

    assert ConsensusLabel.objects.filter(item=item).count() == 3
    item.delete()  # Django deletes the labels first (on_delete=CASCADE)
    assert not ConsensusLabel.objects.exists()
