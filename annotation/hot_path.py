"""The rating hot path in hand-written SQL: read or lock a submitted assignment, store its
judgments, take a slot of the next item and lease it, read the worker's standing in a campaign.

Every API submit runs these statements and its next lease, so they skip the ORM: building its
queries cost about five times the CPU the database spent answering them (README, benchmarks).
The statements are plain SQL that PostgreSQL and SQLite both run, the same text on both (but for the
name of the string aggregate: ``string_agg``, ``group_concat``); the row locks come from Django's
own clause for the backend (``connection.ops.for_update_sql``), which SQLite, whose writers queue
behind one another, leaves out. On PostgreSQL two steps run their statements as one (INSERT and
UPDATE inside WITH, which SQLite lacks): the submission's three writes, and the lease's take and
insert, which then needs no transaction around it; a live lease's submission needs none either
(``store_submission``). Rows come back as model instances
built with ``Model.from_db``: fields a statement does not read are deferred, not defaulted.

A campaign that stops once the answer is decided (``Campaign.stop_when_decided``) costs no extra
round trip: the assignment's read also reads its item's judgments so far, the service decides, and
the submission's UPDATE of the item's count releases its remaining slots when it decides the item.

Business rules (who may submit what, the cascade, gold) stay in ``annotation.services``. Apart
from ``lease_open_item`` and (on PostgreSQL) ``store_submission``, atomic on their own, and the unlocked
``find_assignment``, these functions run inside its transactions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection, transaction

from annotation.models import Assignment, Campaign, Item, Judgment

CAMPAIGN_FIELDS = (
    "id",
    "name",
    "kind",
    "status",
    "raters_per_item",
    "gold_rate",
    "gold_min",
    "gold_threshold",
    "qualification_threshold",
    "stop_when_decided",
)
# What a worker is shown of an item, and what submitting needs of it.
ITEM_FIELDS = ("id", "campaign_id", "key", "kind", "turn_id", "context", "response", "gold_answers")
ITEM_JSON_AT = tuple(ITEM_FIELDS.index(name) for name in ("context", "gold_answers"))
INSERT_LEASE = "INSERT INTO annotation_assignment (item_id, worker_id, state, expires_at, created_at)"
INSERT_JUDGMENTS = "INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)"
# The item's judgments so far, "<value> <attribute>" each, comma-separated, read with the assignment when
# its campaign stops once the answer is decided (the submission then decides it: no extra round
# trip); nothing is read otherwise. Attributes are slugs: no space, no comma.
JUDGED_SO_FAR = """CASE WHEN c.stop_when_decided AND i.kind = 'normal' THEN
               (SELECT {aggregate}(j.value || ' ' || j.attribute, ',') FROM annotation_judgment j
                WHERE j.item_id = i.id) END"""
_STRING_AGGREGATE = {"postgresql": "string_agg", "sqlite": "group_concat"}


@dataclass(frozen=True)
class Statements:
    lock_assignment: str
    read_assignment: str  # the same without the row lock
    take: str  # take a slot of the next open item, skipping rows other transactions hold
    take_waiting: str  # the same, waiting for held rows
    # PostgreSQL: take and lease in one statement (INSERT and UPDATE inside WITH, which SQLite
    # lacks), atomic without a transaction around it: a transaction's BEGIN and COMMIT cost
    # more than the statements (about 1.5 ms of CPU a judgment, measured).
    lease: str | None
    lease_waiting: str | None


@cache
def _statements(vendor: str) -> Statements:
    """The statements with this backend's lock clauses (one set per backend, built once)."""
    features = connection.features

    def lock(alias: str, *, skip_locked: bool = False) -> str:
        if not features.has_select_for_update:
            return ""
        return connection.ops.for_update_sql(
            skip_locked=skip_locked and features.has_select_for_update_skip_locked,
            of=(alias,) if features.has_select_for_update_of else (),
        )

    campaign_columns = ", ".join(f"c.{name}" for name in CAMPAIGN_FIELDS)
    item_columns = [Item._meta.get_field(name).column for name in ITEM_FIELDS]
    read_assignment = f"""
        SELECT a.worker_id, a.state, a.expires_at > %s, a.submission,
               {", ".join(f"i.{column}" for column in item_columns)}, i.judgment_count, {campaign_columns},
               {JUDGED_SO_FAR.format(aggregate=_STRING_AGGREGATE.get(vendor, "string_agg"))}
        FROM annotation_assignment a
        JOIN annotation_item i ON i.id = a.item_id
        JOIN annotation_campaign c ON c.id = i.campaign_id
        WHERE a.id = %s"""  # noqa: S608 - our columns; values are parameters
    # The next item: the first with a free slot that the worker has not seen and did not write,
    # while the worker holds no live lease in the campaign and is not blocked from it.
    # Its filters match the partial index item_open_idx (campaign, id) WHERE open_slots > 0 AND
    # kind = 'normal', so the first free item is found without reading full ones. The lower
    # bound (the campaign's first open item, one probe of that index) keeps the cost when
    # PostgreSQL walks the primary key instead, as it does for a campaign holding most of the
    # table: without it the walk passed every item of the campaigns before it. "Not seen" is
    # NOT IN over the worker's own assignments (an index-only scan of the (worker, item) unique
    # index): its cost follows the worker's history, not the table's. (A correlated NOT EXISTS
    # lets PostgreSQL pick a merge anti-join over every assignment.)
    next_item = """
        SELECT i.id FROM annotation_item i
        WHERE i.campaign_id = %(campaign)s AND i.kind = 'normal' AND i.open_slots > 0
          AND i.id >= (SELECT min(o.id) FROM annotation_item o
                       WHERE o.campaign_id = %(campaign)s AND o.kind = 'normal' AND o.open_slots > 0)
          AND (i.author_id IS NULL OR i.author_id <> %(worker)s)
          AND i.id NOT IN (SELECT s.item_id FROM annotation_assignment s WHERE s.worker_id = %(worker)s)
          AND NOT EXISTS (SELECT 1 FROM annotation_workerquality q
                          WHERE q.campaign_id = %(campaign)s AND q.worker_id = %(worker)s AND q.blocked)
          AND NOT EXISTS (SELECT 1 FROM annotation_assignment l JOIN annotation_item li ON li.id = l.item_id
                          WHERE l.worker_id = %(worker)s AND l.state = 'leased' AND l.expires_at > %(now)s
                            AND li.campaign_id = %(campaign)s)
        ORDER BY i.id
        LIMIT 1"""

    def take(lock_clause: str) -> str:
        return f"""
            UPDATE annotation_item SET open_slots = open_slots - 1
            WHERE id = ({next_item} {lock_clause})
            RETURNING {", ".join(item_columns)}"""  # noqa: S608 - our SQL; values are parameters

    def lease(take: str) -> str | None:
        if vendor != "postgresql":
            return None
        return f"""
            WITH taken AS ({take}),
                 leased AS ({INSERT_LEASE} SELECT id, %(worker)s, %(state)s, %(expires)s, %(now)s FROM taken
                            RETURNING id)
            SELECT leased.id, {", ".join(f"taken.{column}" for column in item_columns)}
            FROM taken, leased"""  # noqa: S608 - our SQL; values are parameters

    take_skipping, take_waiting = take(lock("i", skip_locked=True)), take(lock("i"))
    return Statements(
        lock_assignment=f"{read_assignment} {lock('a')}",
        read_assignment=read_assignment,
        take=take_skipping,
        take_waiting=take_waiting,
        lease=lease(take_skipping),
        lease_waiting=lease(take_waiting),
    )


def statements() -> Statements:
    """The statements for the backend of the default connection."""
    return _statements(connection.vendor)


def _db_datetime(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _item(row: tuple[Any, ...]) -> Item:
    """An Item from the ITEM_FIELDS columns of a row (JSON arrives as text on both backends)."""
    values = list(row)
    for index in ITEM_JSON_AT:
        if isinstance(values[index], str):
            values[index] = json.loads(values[index])
    return Item.from_db(connection.alias, ITEM_FIELDS, values)


def _judged(text: str) -> tuple[str, str]:
    """(attribute, value) from one judgment as ``JUDGED_SO_FAR`` writes it."""
    value, _, attribute = text.partition(" ")
    return attribute, value


# --- submitting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """A submitted assignment with its item and campaign attached."""

    assignment: Assignment
    live: bool  # the lease had not run out at ``now``
    # Normal items of campaigns that stop when decided: the item's judgments when it was read,
    # (attribute, value) each; None elsewhere.
    judged: list[tuple[str, str]] | None = None


def find_assignment(assignment_id: int, *, now: datetime, lock: bool) -> Found | None:
    """The assignment, its row locked for the rest of the transaction with ``lock``; None when
    there is none."""
    here = statements()
    with connection.cursor() as cursor:
        statement = here.lock_assignment if lock else here.read_assignment
        cursor.execute(statement, [_db_datetime(now), assignment_id])
        row = cursor.fetchone()
    if row is None:
        return None
    worker_id, state, live, submission = row[:4]
    item_end = 4 + len(ITEM_FIELDS)
    item = _item(row[4:item_end])
    item.judgment_count = row[item_end]
    campaign_end = item_end + 1 + len(CAMPAIGN_FIELDS)
    item.campaign = Campaign.from_db(connection.alias, CAMPAIGN_FIELDS, row[item_end + 1 : campaign_end])
    judged_text = row[campaign_end]
    judged = None
    if item.campaign.stop_when_decided and item.kind == Item.Kind.NORMAL:
        judged = [_judged(text) for text in judged_text.split(",")] if judged_text else []
    if isinstance(submission, str):
        submission = json.loads(submission)
    assignment = Assignment.from_db(
        connection.alias,
        ("id", "item_id", "worker_id", "state", "submission"),
        (assignment_id, item.pk, worker_id, state, submission),
    )
    assignment.item = item
    return Found(assignment=assignment, live=bool(live), judged=judged)


Values = dict[str, tuple[str, str | None]]  # attribute → (value counted, value answered or None)
# The judgments, the item's judgment count (None: gold) and the count it was decided at (None: not
# decided; the campaign's raters per item make it complete).
Stored = tuple[list[Judgment], int | None, int | None]
MARK_SUBMITTED = (
    "UPDATE annotation_assignment SET state = %s, submitted_at = %s, submission = %s WHERE id = %s"
)
RETURNING_JUDGED = "RETURNING attribute, id"
JUDGED_IDS = "(SELECT json_object_agg(attribute, id) FROM judged)"  # attribute → judgment id
COUNT_JUDGMENT = (
    "UPDATE annotation_item SET judgment_count = judgment_count + 1{decide} WHERE id = {item} AND kind = %s"
)
# The submission decides the item: its remaining slots are released, and it is complete at this
# count (kept if a concurrent submission decided it first: right values always see the old row).
DECIDE = ", open_slots = 0, decided_at_raters = COALESCE(decided_at_raters, judgment_count + 1)"
RETURNING_COUNTED = "RETURNING judgment_count, decided_at_raters"


def stores_atomically() -> bool:
    """Whether ``store_submission`` is one statement here, atomic without a transaction around it
    (PostgreSQL: INSERT and UPDATE inside WITH); elsewhere it needs the caller's transaction."""
    return connection.vendor == "postgresql"


def store_submission(
    assignment: Assignment,
    values: Values,
    *,
    now: datetime,
    submission: dict[str, Any],
    decides: bool = False,
) -> Stored | None:
    """Mark the assignment submitted, only while its lease is held and live at ``now``; insert one
    judgment per attribute (value counted, value answered or None when not asked) and count the
    judgment on a normal item; with ``decides`` (the submission decides the item: its labels can no
    longer change) the same UPDATE releases the item's remaining slots and records the count it was
    decided at. Returns the judgments, the item's new judgment count (None for gold and
    qualification items) and the count it was decided at (None: not decided), or None when the
    lease was not held any more (another request submitted it, or it ran out): nothing is written
    then.

    PostgreSQL runs it as one statement, with or without a lock on the row: a concurrent writer of
    the assignment's row makes it wait and test the lease again on the row that writer left (READ
    COMMITTED), so it is as safe as the lock. Elsewhere three statements, in the caller's
    transaction.
    """
    rows = _judgment_rows(assignment, values)
    marked = f"{MARK_SUBMITTED} AND state = %s AND expires_at > %s"
    marked_params = [
        Assignment.State.SUBMITTED,
        _db_datetime(now),
        json.dumps(submission),
        assignment.pk,
        Assignment.State.LEASED,
        _db_datetime(now),
    ]
    answers = ", ".join(["(%s, %s, %s)"] * len(rows))
    answer_params = [field for row in rows for field in row[2:]]
    count_judgment = COUNT_JUDGMENT.replace("{decide}", DECIDE if decides else "")
    with connection.cursor() as cursor:
        if stores_atomically():
            cursor.execute(
                f"""WITH marked AS ({marked} RETURNING item_id),
                         judged AS ({INSERT_JUDGMENTS}
                                    SELECT %s, marked.item_id, v.attribute, v.value, v.raw_value
                                    FROM marked, (VALUES {answers}) AS v (attribute, value, raw_value)
                                    {RETURNING_JUDGED}),
                         counted AS ({count_judgment.format(item="(SELECT item_id FROM marked)")}
                                     {RETURNING_COUNTED})
                    SELECT EXISTS (SELECT FROM marked), {JUDGED_IDS}, (SELECT judgment_count FROM counted),
                           (SELECT decided_at_raters FROM counted)""",  # noqa: S608 - our SQL; values are parameters
                [*marked_params, assignment.pk, *answer_params, Item.Kind.NORMAL],
            )
            held, ids, count, decided_at = cursor.fetchone()
        else:
            cursor.execute(marked, marked_params)
            held = cursor.rowcount == 1
            if held:
                judged = f"{INSERT_JUDGMENTS} VALUES {', '.join(['(%s, %s, %s, %s, %s)'] * len(rows))}"
                cursor.execute(f"{judged} {RETURNING_JUDGED}", [field for row in rows for field in row])
                ids = dict(cursor.fetchall())
                cursor.execute(
                    f"{count_judgment.format(item='%s')} {RETURNING_COUNTED}",
                    [assignment.item_id, Item.Kind.NORMAL],
                )
                count, decided_at = cursor.fetchone() or (None, None)
    if not held:
        return None
    judgments = _stored(assignment, rows, ids, now=now, submission=submission)
    return judgments, count, decided_at


def _judgment_rows(assignment: Assignment, values: Values) -> list[tuple[Any, ...]]:
    return [
        (assignment.pk, assignment.item_id, attribute, value, raw or "")
        for attribute, (value, raw) in values.items()
    ]


def _stored(
    assignment: Assignment,
    rows: list[tuple[Any, ...]],
    ids: dict[str, int],
    *,
    now: datetime,
    submission: dict[str, Any],
) -> list[Judgment]:
    assignment.state = Assignment.State.SUBMITTED
    assignment.submitted_at = now
    assignment.submission = submission
    judgments = [
        Judgment(id=ids[attr], assignment_id=a, item_id=i, attribute=attr, value=v, raw_value=raw)
        for a, i, attr, v, raw in rows
    ]
    return judgments


# --- leasing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """A worker in a campaign: their live lease, if any, and what their quality record says
    (not blocked, not yet qualified when they have none)."""

    live_assignment_id: int | None
    blocked: bool
    blocked_reason: str
    qualified: bool | None


def standing(*, worker_id: int, campaign_id: int, now: datetime) -> Standing:
    """The worker's standing in the campaign, in one statement."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT (SELECT a.id FROM annotation_assignment a JOIN annotation_item i ON i.id = a.item_id
                    WHERE a.worker_id = %(worker)s AND a.state = 'leased' AND a.expires_at > %(now)s
                      AND i.campaign_id = %(campaign)s
                    ORDER BY a.id LIMIT 1),
                   q.blocked, q.blocked_reason, q.qualified
            FROM (SELECT 1 AS one) AS here
            LEFT JOIN annotation_workerquality q ON q.campaign_id = %(campaign)s AND q.worker_id = %(worker)s
            """,
            {"worker": worker_id, "now": _db_datetime(now), "campaign": campaign_id},
        )
        live, blocked, reason, qualified = cursor.fetchone()
    return Standing(
        live_assignment_id=live,
        blocked=bool(blocked),
        blocked_reason=reason or "",
        qualified=None if qualified is None else bool(qualified),
    )


def lease_open_item(
    *, campaign: Campaign, worker_id: int, now: datetime, expires_at: datetime, wait: bool = True
) -> Assignment | None:
    """Take a slot of the next item for the worker (see ``Statements.take``) and lease it; None
    when there is none, or when the worker holds a live lease in the campaign or is blocked from it.

    Items another transaction holds are skipped (SKIP LOCKED), so raters never queue behind each
    other. Skipped is not gone, though: with ``wait``, when every candidate is held, wait for
    them, so that "nothing" means nothing is left (near the end of a campaign), not "all busy".
    Atomic on its own: one statement on PostgreSQL, a transaction of two elsewhere.
    """
    here = statements()
    params = {
        "campaign": campaign.pk,
        "worker": worker_id,
        "now": _db_datetime(now),
        "expires": _db_datetime(expires_at),
        "state": Assignment.State.LEASED,
    }
    if here.lease is None or here.lease_waiting is None:
        with transaction.atomic():
            row = _skipping_then_waiting(here.take, here.take_waiting, params, wait=wait)
            if row is None:
                return None
            item = _item(row)
            item.campaign = campaign
            return lease_item(item=item, worker_id=worker_id, now=now, expires_at=expires_at)
    row = _skipping_then_waiting(here.lease, here.lease_waiting, params, wait=wait)
    if row is None:
        return None
    item = _item(row[1:])
    item.campaign = campaign
    return _leased(row[0], item=item, worker_id=worker_id, now=now, expires_at=expires_at)


def _skipping_then_waiting(skipping: str, waiting: str, params: dict[str, Any], *, wait: bool) -> Any:
    """The row of the SKIP LOCKED statement, or, with ``wait`` and none, of the waiting one."""
    with connection.cursor() as cursor:
        cursor.execute(skipping, params)
        row = cursor.fetchone()
        if row is None and wait:
            cursor.execute(waiting, params)
            row = cursor.fetchone()
    return row


def lease_item(*, item: Item, worker_id: int, now: datetime, expires_at: datetime) -> Assignment:
    """Lease the item to the worker (its slot, for a normal item, already taken)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"{INSERT_LEASE} VALUES (%s, %s, %s, %s, %s) RETURNING id",
            [item.pk, worker_id, Assignment.State.LEASED, _db_datetime(expires_at), _db_datetime(now)],
        )
        (pk,) = cursor.fetchone()
    return _leased(pk, item=item, worker_id=worker_id, now=now, expires_at=expires_at)


def _leased(pk: int, *, item: Item, worker_id: int, now: datetime, expires_at: datetime) -> Assignment:
    assignment = Assignment.from_db(
        connection.alias,
        ("id", "item_id", "worker_id", "state", "expires_at", "created_at", "submitted_at", "submission"),
        (pk, item.pk, worker_id, Assignment.State.LEASED, expires_at, now, None, None),
    )
    assignment.item = item
    return assignment
