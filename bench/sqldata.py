"""Bulk data for the benchmarks, written with ``INSERT … SELECT … FROM generate_series`` (seconds, not
minutes, for a million rows). Every function runs in the bench database through Django's connection."""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection

RESPONSE_TEXT = "That is a good question. Eurovision started in 1956 in Lugano, and this reply is number "
SSI_ATTRIBUTES = ("sensible", "specific", "interesting")
# Answer pool of one rater for one SSI question, drawn by a hash: 60 % yes, 30 % no, 10 % maybe.
ANSWER_POOL = ["yes"] * 6 + ["no"] * 3 + ["maybe"]


def execute(sql: str, params: Sequence[object] | dict[str, object] | None = None) -> int:
    """Run one statement (autocommit); returns the row count."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def scalar(sql: str, params: Sequence[object] | dict[str, object] | None = None) -> object:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def create_users(prefix: str, count: int) -> list[int]:
    """``count`` active users named ``prefix1``… with unusable passwords; their ids in order."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, last_name,
                                   email, is_staff, is_active, date_joined)
            SELECT '!', NULL, false, %s || g, '', '', '', false, true, now()
            FROM generate_series(1, %s) AS g
            ORDER BY g
            RETURNING id
            """,
            [prefix, count],
        )
        return sorted(row[0] for row in cursor.fetchall())


def insert_items(campaign_id: int, count: int, *, open_slots: int, judgment_count: int = 0) -> int:
    """``count`` normal items in the campaign, keys ``item-1``…, every NOT NULL column filled."""
    return execute(
        """
        INSERT INTO annotation_item (campaign_id, key, kind, context, response, gold_answers, open_slots,
                                     judgment_count, created_at, turn_id, author_id)
        SELECT %s, 'item-' || g, 'normal', '[]'::jsonb, %s || g || '.', '{}'::jsonb, %s, %s, now(),
               NULL, NULL
        FROM generate_series(1, %s) AS g
        ORDER BY g
        """,
        [campaign_id, RESPONSE_TEXT, open_slots, judgment_count, count],
    )


def complete_first_items(campaign_id: int, count: int, *, workers: Sequence[int], raters: int) -> int:
    """The first ``count`` items of the campaign, in id order, fully rated: ``raters`` submitted
    assignments each, by distinct ``workers`` taken in turn, and no slot open. (Their judgments are left
    out: nothing measured here reads them.) Returns the assignments inserted."""
    if len(workers) < raters:
        raise ValueError("need at least as many workers as raters per item")
    inserted = execute(
        """
        WITH chosen AS (
            SELECT id, row_number() OVER (ORDER BY id) - 1 AS n
            FROM annotation_item WHERE campaign_id = %(campaign)s AND kind = 'normal'
            ORDER BY id LIMIT %(count)s
        ), workers AS (
            SELECT w.id, w.n - 1 AS n FROM unnest(%(workers)s::int[]) WITH ORDINALITY AS w(id, n)
        )
        INSERT INTO annotation_assignment (state, expires_at, created_at, submitted_at, submission,
                                           worker_id, item_id)
        SELECT 'submitted', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
               %(submission)s::jsonb, workers.id, chosen.id
        FROM chosen
        CROSS JOIN generate_series(0, %(raters)s - 1) AS r
        JOIN workers ON workers.n = (chosen.n * %(raters)s + r) %% %(worker_count)s
        ORDER BY chosen.n, r
        """,
        {
            "campaign": campaign_id,
            "count": count,
            "workers": list(workers),
            "submission": json.dumps({"sensible": "no"}),
            "raters": raters,
            "worker_count": len(workers),
        },
    )
    execute(
        """
        UPDATE annotation_item SET open_slots = 0, judgment_count = %s
        WHERE campaign_id = %s AND kind = 'normal'
          AND id <= (SELECT id FROM annotation_item WHERE campaign_id = %s ORDER BY id OFFSET %s LIMIT 1)
        """,
        [raters, campaign_id, campaign_id, count - 1],
    )
    return inserted


def submit_frontier(
    campaign_id: int, *, offset: int, workers: Sequence[int], per_worker: int, per_item: int, raters: int
) -> int:
    """Submitted assignments for ``workers``, ``per_worker`` each, ``per_item`` to an item, on the items
    from ``offset`` on (in id order), with those items' slots and judgment counts to match.

    Assignment k goes to item k // per_item and worker k % len(workers): an item's workers are distinct,
    and each worker's items are spread over the frontier every len(workers) / per_item items.
    """
    total = len(workers) * per_worker
    items = -(-total // per_item)
    submission = json.dumps(dict(zip(SSI_ATTRIBUTES, ("yes", "yes", "no"), strict=True)))
    inserted = execute(
        """
        WITH frontier AS (
            SELECT id, row_number() OVER (ORDER BY id) - 1 AS n
            FROM (SELECT id FROM annotation_item WHERE campaign_id = %(campaign)s AND kind = 'normal'
                  ORDER BY id OFFSET %(offset)s LIMIT %(items)s) AS chosen
        ), workers AS (
            SELECT w.id, w.n - 1 AS n FROM unnest(%(workers)s::int[]) WITH ORDINALITY AS w(id, n)
        )
        INSERT INTO annotation_assignment (state, expires_at, created_at, submitted_at, submission,
                                           worker_id, item_id)
        SELECT 'submitted', now() - interval '1 hour', now() - interval '2 hours', now() - interval '1 hour',
               %(submission)s::jsonb, workers.id, frontier.id
        FROM generate_series(0, %(total)s - 1) AS k
        JOIN frontier ON frontier.n = k / %(per_item)s
        JOIN workers ON workers.n = k %% %(worker_count)s
        ORDER BY k
        """,
        {
            "campaign": campaign_id,
            "offset": offset,
            "items": items,
            "workers": list(workers),
            "submission": submission,
            "total": total,
            "per_item": per_item,
            "worker_count": len(workers),
        },
    )
    execute(
        """
        UPDATE annotation_item SET open_slots = %(raters)s - done.n, judgment_count = done.n
        FROM (SELECT item_id, count(*) AS n FROM annotation_assignment
              WHERE worker_id = ANY(%(workers)s::int[]) AND state = 'submitted' GROUP BY item_id) AS done
        WHERE annotation_item.id = done.item_id AND annotation_item.campaign_id = %(campaign)s
        """,
        {"raters": raters, "workers": list(workers), "campaign": campaign_id},
    )
    return inserted


def rate_every_item(campaign_id: int, workers: Sequence[int]) -> tuple[int, int]:
    """Every item of the SSI campaign rated by every one of ``workers``: a submitted assignment each,
    with answers drawn by a hash, then its three judgments after the cascade (a question the cascade
    did not ask counts "no", answered blank). Returns (assignments, judgments) inserted."""
    assignments = execute(
        """
        INSERT INTO annotation_assignment (state, expires_at, created_at, submitted_at, submission,
                                           worker_id, item_id)
        SELECT 'submitted', now() - interval '1 day', now() - interval '1 day', now() - interval '1 day',
               jsonb_strip_nulls(jsonb_build_object(
                   'sensible', s,
                   'specific', CASE WHEN s = 'yes' THEN sp END,
                   'interesting', CASE WHEN s = 'yes' AND sp = 'yes' THEN it END)),
               worker_id, item_id
        FROM (
            SELECT i.id AS item_id, w.id AS worker_id,
                   (%(pool)s::text[])[1 + (hashint8(i.id * 64 + w.n * 3) & 65535) %% 10] AS s,
                   (%(pool)s::text[])[1 + (hashint8(i.id * 64 + w.n * 3 + 1) & 65535) %% 10] AS sp,
                   (%(pool)s::text[])[1 + (hashint8(i.id * 64 + w.n * 3 + 2) & 65535) %% 10] AS it
            FROM annotation_item AS i CROSS JOIN unnest(%(workers)s::int[]) WITH ORDINALITY AS w(id, n)
            WHERE i.campaign_id = %(campaign)s
            ORDER BY i.id, w.n
        ) AS answers
        """,
        {"pool": ANSWER_POOL, "workers": list(workers), "campaign": campaign_id},
    )
    judgments = execute(
        """
        INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
        SELECT a.id, a.item_id, q.attribute, coalesce(a.submission ->> q.attribute, 'no'),
               coalesce(a.submission ->> q.attribute, '')
        FROM annotation_assignment AS a
        JOIN annotation_item AS i ON i.id = a.item_id
        CROSS JOIN unnest(%(attributes)s::text[]) AS q(attribute)
        WHERE i.campaign_id = %(campaign)s
        ORDER BY a.id, q.attribute
        """,
        {"attributes": list(SSI_ATTRIBUTES), "campaign": campaign_id},
    )
    return assignments, judgments


def vacuum_analyze(*tables: str) -> None:
    """VACUUM ANALYZE the tables, then CHECKPOINT, so no autovacuum or checkpoint lands in a measurement."""
    for table in tables:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"not a table name: {table!r}")
        execute(f"VACUUM ANALYZE {table}")
    execute("CHECKPOINT")
