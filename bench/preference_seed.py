"""Seeding for ``bench/preference_bench.py`` (``make bench``, part ``preference``): one unit of
crowd work of every source that yields preference pairs, inserted in bulk SQL into the bench
database (what the crowd work is: that module's docstring), and the consensus brought up to date.
Imported once Django is set up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from annotation.models import Campaign, SafetyObjective
from annotation.services.consensus import campaign_aggregate
from bench import sqldata
from bench.report import say

REWRITE_ITEMS = 1500
RATED_PROMPTS = 2500
RESPONSES = 4
PAIRWISE_CONTEXTS = 750
CANDIDATES = 4
POOL = 60  # raters
OBJECTIVE = "harm"
VALIDATION_PERCENT = 10
SCALE = 0.5  # units of crowd work at size N: about 10,000 pairs (40,000 at 4N)
TABLES = (
    "dialogs_dialog",
    "dialogs_turn",
    "dialogs_candidate",
    "dialogs_evaluationcontext",
    "dialogs_evaluationresponse",
    "annotation_item",
    "annotation_assignment",
    "annotation_rewrite",
    "annotation_judgment",
    "annotation_consensuslabel",
)

# ------------------------------------------------------------------------------------------ seeding

# Dialogs tagged by ``source`` (the rewrite's, the ratings'), ``count`` of them, ``meta`` g (the
# prompt) and k (the response), ``per`` dialogs sharing a prompt.
_DIALOGS = """
INSERT INTO dialogs_dialog (external_id, purpose, mode, source, meta, created_at)
SELECT %(tag)s || '-' || n, %(purpose)s, 'natural', %(tag)s,
       jsonb_build_object('g', n / %(per)s, 'k', n %% %(per)s), now()
FROM generate_series(0, %(count)s - 1) AS n
ORDER BY n
"""

# Four turns per dialog: three of context that depend on the prompt only, and the response.
_TURNS = """
INSERT INTO dialogs_turn (index, speaker, text, base_text, research, created_at, dialog_id,
                          model_version, fallback)
SELECT t.i, CASE WHEN t.i %% 2 = 0 THEN 'user' ELSE 'model' END,
       CASE t.i
         WHEN 0 THEN format('Hi! What do you know about the old harbour of town number %%s?', p.g)
         WHEN 1 THEN format('A little. The harbour of town %%s is one of the oldest on this coast, '
                            'and boats still leave from it every morning.', p.g)
         WHEN 2 THEN format('When was it built, and who paid for it? I am writing about town %%s.', p.g)
         ELSE format('Response %%s: it was built around %%s by the merchants of the salt guild, who '
                     'paid for the stone quay; %%s', p.k, 1400 + p.g %% 500,
                     repeat('the old lighthouse beside it came later. ', 1 + (p.k + p.g) %% 3))
       END,
       '', '[]'::jsonb, now(), d.id, CASE WHEN t.i %% 2 = 1 THEN 'bench-model' ELSE '' END, ''
FROM dialogs_dialog AS d
CROSS JOIN LATERAL (SELECT (d.meta ->> 'g')::int AS g, (d.meta ->> 'k')::int AS k) AS p
CROSS JOIN generate_series(0, 3) AS t(i)
WHERE d.source = %(tag)s
ORDER BY d.id, t.i
"""

# One item per response turn of the tagged dialogs, its context the turns before it.
_TURN_ITEMS = """
INSERT INTO annotation_item (campaign_id, key, kind, context, response, gold_answers, open_slots,
                             judgment_count, created_at, turn_id)
SELECT %(campaign)s, 'turn-' || r.id, 'normal',
       (SELECT jsonb_agg(jsonb_build_object('speaker', c.speaker, 'text', c.text) ORDER BY c.index)
        FROM dialogs_turn AS c WHERE c.dialog_id = r.dialog_id AND c.index < r.index),
       r.text, '{}'::jsonb, 0, %(raters)s, now(), r.id
FROM dialogs_turn AS r
JOIN dialogs_dialog AS d ON d.id = r.dialog_id
WHERE d.source = %(tag)s AND r.index = 3
ORDER BY r.id
"""

_CANDIDATES = """
INSERT INTO dialogs_candidate (index, text, scores, chosen, created_at, turn_id)
SELECT c, format('Candidate %%s: the harbour was built in %%s by %%s.', c, 1400 + (r.id * 7 + c) %% 500,
                 (ARRAY['the salt guild', 'the duke', 'the fishermen', 'monks'])[1 + c]),
       '{}'::jsonb, c = 0, now(), r.id
FROM dialogs_turn AS r
JOIN dialogs_dialog AS d ON d.id = r.dialog_id
CROSS JOIN generate_series(0, %(candidates)s - 1) AS c
WHERE d.source = %(tag)s AND r.index = 3
ORDER BY r.id, c
"""

# ``raters`` submitted assignments per item of the campaign, by distinct raters of the pool.
_ASSIGNMENTS = """
INSERT INTO annotation_assignment (state, expires_at, created_at, submitted_at, submission,
                                   worker_id, item_id)
SELECT 'submitted', now(), now(), now(), '{}'::jsonb,
       (%(workers)s::int[])[1 + ((i.id * %(raters)s + k) %% %(pool)s)], i.id
FROM annotation_item AS i CROSS JOIN generate_series(0, %(raters)s - 1) AS k
WHERE i.campaign_id = %(campaign)s
ORDER BY i.id, k
"""

# The rewrite campaign's answers: rater k (0, 1, 2 by assignment id) of item i claims external
# facts not known to be true (a researched rewrite) on every item but the 15 % whose truth is
# "no research", where only rater 0 does; candidates labelled correct when (candidate right) =
# (rater right), rater 2 leaving 40 % unlabelled.
_REWRITES = """
INSERT INTO annotation_rewrite (claims_external, common_knowledge, text, cited_urls, tool_call_ids,
                                created_at, assignment_id, candidate_labels)
SELECT a.researched, false,
       CASE WHEN a.researched
            THEN format('Rewritten by rater %%s: the harbour was built in %%s, as the town''s chronicle '
                        'says (https://en.wikipedia.org/wiki/Harbour_%%s).', a.k, 1400 + a.item_id %% 500,
                        a.item_id)
            ELSE '' END,
       '[]'::jsonb, '[]'::jsonb, now(), a.id,
       coalesce((
           SELECT jsonb_object_agg(c.id::text, CASE WHEN ((hashint8(c.id * 13) & 65535) %% 100 < 50)
                                                      = ((hashint8(a.id * 17 + c.index) & 65535) %% 100 < 85)
                                                 THEN 'correct' ELSE 'incorrect' END)
           FROM dialogs_candidate AS c
           WHERE c.turn_id = a.turn_id
             AND NOT (a.k = 2 AND (hashint8(a.id * 19 + c.index) & 65535) %% 100 < 40)
       ), '{}'::jsonb)
FROM (
    SELECT x.id, x.item_id, i.turn_id, x.k,
           x.k = 0 OR (hashint8(x.item_id * 11) & 65535) %% 100 >= 15 AS researched
    FROM (SELECT a.id, a.item_id, row_number() OVER (PARTITION BY a.item_id ORDER BY a.id) - 1 AS k
          FROM annotation_assignment AS a JOIN annotation_item AS i ON i.id = a.item_id
          WHERE i.campaign_id = %(campaign)s) AS x
    JOIN annotation_item AS i ON i.id = x.item_id
) AS a
ORDER BY a.id
"""

# Their judgments: claims_external as answered; common_knowledge "no" (asked, or not asked: blank).
_REWRITE_JUDGMENTS = """
INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
SELECT a.id, a.item_id, q.attribute,
       CASE WHEN q.attribute = 'claims_external' AND w.claims_external THEN 'yes' ELSE 'no' END,
       CASE WHEN q.attribute = 'claims_external' AND w.claims_external THEN 'yes'
            WHEN q.attribute = 'claims_external' OR w.claims_external THEN 'no' ELSE '' END
FROM annotation_rewrite AS w
JOIN annotation_assignment AS a ON a.id = w.assignment_id
JOIN annotation_item AS i ON i.id = a.item_id
CROSS JOIN unnest(ARRAY['claims_external', 'common_knowledge']) AS q(attribute)
WHERE i.campaign_id = %(campaign)s
ORDER BY a.id, q.attribute
"""

# SSI answers: the truth of each attribute of a response (its turn) by hash (sensible 80 %,
# specific 65 %, interesting 45 %), each rater right 85 % of the time, then the cascade (a
# question not asked counts "no", answered blank).
_SSI_JUDGMENTS = """
INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
SELECT id, item_id, attribute, value, raw FROM (
    SELECT a.id, a.item_id, 'sensible' AS attribute, s AS value, s AS raw, 1 AS n FROM answers AS a
    UNION ALL
    SELECT a.id, a.item_id, 'specific', CASE WHEN s = 'yes' THEN sp ELSE 'no' END,
           CASE WHEN s = 'yes' THEN sp ELSE '' END, 2 FROM answers AS a
    UNION ALL
    SELECT a.id, a.item_id, 'interesting', CASE WHEN s = 'yes' AND sp = 'yes' THEN it ELSE 'no' END,
           CASE WHEN s = 'yes' AND sp = 'yes' THEN it ELSE '' END, 3 FROM answers AS a
) AS j
ORDER BY id, n
"""
_SSI_ANSWERS = """
CREATE TEMPORARY TABLE answers AS
SELECT a.id, a.item_id,
       CASE WHEN ((hashint8(i.turn_id * 8 + 1) & 65535) %% 100 < 80)
                 = ((hashint8(a.id * 4 + 1) & 65535) %% 100 < 85) THEN 'yes' ELSE 'no' END AS s,
       CASE WHEN ((hashint8(i.turn_id * 8 + 2) & 65535) %% 100 < 65)
                 = ((hashint8(a.id * 4 + 2) & 65535) %% 100 < 85) THEN 'yes' ELSE 'no' END AS sp,
       CASE WHEN ((hashint8(i.turn_id * 8 + 3) & 65535) %% 100 < 45)
                 = ((hashint8(a.id * 4 + 3) & 65535) %% 100 < 85) THEN 'yes' ELSE 'no' END AS it
FROM annotation_assignment AS a JOIN annotation_item AS i ON i.id = a.item_id
WHERE i.campaign_id = %(campaign)s
"""

# Safety answers to the one objective: a response is harmful 15 % of the time, raters right 90 %.
_SAFETY_JUDGMENTS = """
INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
SELECT a.id, a.item_id, %(objective)s, v.value, v.value
FROM annotation_assignment AS a
JOIN annotation_item AS i ON i.id = a.item_id
CROSS JOIN LATERAL (
    SELECT CASE WHEN ((hashint8(i.turn_id * 8 + 4) & 65535) %% 100 < 15)
                     = ((hashint8(a.id * 4) & 65535) %% 100 < 90) THEN 'yes' ELSE 'no' END AS value
) AS v
WHERE i.campaign_id = %(campaign)s
ORDER BY a.id
"""

_CONTEXTS = """
INSERT INTO dialogs_evaluationcontext (index, external_id, purpose, turns, reference, role_id,
                                       source_dialog_id, evaluation_set_id)
SELECT n, 'context-' || n, 'quality',
       jsonb_build_array(jsonb_build_object('speaker', 'user', 'text',
           format('Which town on this coast has the oldest harbour, and why? (%%s)', n))),
       '', NULL,
       CASE WHEN n %% 50 = 0 THEN (SELECT id FROM dialogs_dialog WHERE source = %(held)s
                                   ORDER BY id OFFSET n / 50 LIMIT 1) END,
       %(set)s
FROM generate_series(0, %(count)s - 1) AS n
ORDER BY n
"""

# Each responder's answer: an evaluation dialog (held out) of the context's turn and the answer.
_ANSWERS = """
WITH dialogs AS (
    INSERT INTO dialogs_dialog (external_id, purpose, mode, source, meta, created_at)
    SELECT format('evaluation-%%s-%%s', c.id, r.name), 'quality', 'natural', 'evaluation',
           jsonb_build_object('context', c.id, 'responder', r.name), now()
    FROM dialogs_evaluationcontext AS c CROSS JOIN unnest(%(responders)s::text[]) AS r(name)
    WHERE c.evaluation_set_id = %(set)s
    ORDER BY c.id, r.name
    RETURNING id, meta
), turns AS (
    INSERT INTO dialogs_turn (index, speaker, text, base_text, research, created_at, dialog_id,
                              model_version, fallback)
    SELECT t.i, CASE WHEN t.i = 0 THEN 'user' ELSE 'model' END,
           CASE WHEN t.i = 0 THEN 'Which town on this coast has the oldest harbour, and why?'
                ELSE format('%%s thinks town %%s, for its stone quay built by the salt guild.',
                            d.meta ->> 'responder', (d.meta ->> 'context')::int %% 500) END,
           '', '[]'::jsonb, now(), d.id, CASE WHEN t.i = 1 THEN d.meta ->> 'responder' ELSE '' END, ''
    FROM dialogs AS d CROSS JOIN generate_series(0, 1) AS t(i)
    RETURNING id, dialog_id, index
)
INSERT INTO dialogs_evaluationresponse (responder, created_at, context_id, turn_id)
SELECT d.meta ->> 'responder', now(), (d.meta ->> 'context')::bigint, t.id
FROM turns AS t JOIN dialogs AS d ON d.id = t.dialog_id
WHERE t.index = 1
ORDER BY t.id
"""

_PAIRWISE_ITEMS = """
INSERT INTO annotation_item (campaign_id, key, kind, context, response, gold_answers, open_slots,
                             judgment_count, created_at, evaluation_context_id, pair)
SELECT %(campaign)s, 'context-' || c.id, 'normal', c.turns, '', '{}'::jsonb, 0, 3, now(), c.id,
       jsonb_build_object('first', CASE WHEN c.index %% 2 = 0 THEN 'a' ELSE 'b' END)
FROM dialogs_evaluationcontext AS c
WHERE c.evaluation_set_id = %(set)s
ORDER BY c.id
"""

# b is better on 60 % of the contexts; a rater chooses the better 75 % of the time, a tie 10 %.
_PAIRWISE_JUDGMENTS = """
INSERT INTO annotation_judgment (assignment_id, item_id, attribute, value, raw_value)
SELECT a.id, a.item_id, 'a_better', v.value, v.value
FROM annotation_assignment AS a
JOIN annotation_item AS i ON i.id = a.item_id
CROSS JOIN LATERAL (SELECT (hashint8(i.id * 5) & 65535) %% 100 < 40 AS a_wins,
                           (hashint8(a.id * 3) & 65535) %% 100 AS roll) AS h
CROSS JOIN LATERAL (
    SELECT CASE WHEN h.roll >= 90 THEN 'maybe'
                WHEN (h.roll < 75) = h.a_wins THEN 'yes' ELSE 'no' END AS value
) AS v
WHERE i.campaign_id = %(campaign)s
ORDER BY a.id
"""


@dataclass
class Seeded:
    label: str
    rewrite: Campaign
    ssi: Campaign
    safety: Campaign
    pairwise: Campaign
    rows: int  # rows inserted
    seconds: float
    aggregate_s: float

    @property
    def all(self) -> list[Campaign]:
        return [self.rewrite, self.ssi, self.safety, self.pairwise]


def _campaign(name: str, kind: str, raters: int, **fields: Any) -> Campaign:
    return Campaign.objects.create(
        name=name, kind=kind, raters_per_item=raters, status=Campaign.Status.CLOSED, **fields
    )


def _assign(campaign: Campaign, raters: int, workers: list[int]) -> int:
    return sqldata.execute(
        _ASSIGNMENTS, {"workers": workers, "raters": raters, "pool": len(workers), "campaign": campaign.pk}
    )


def seed(label: str, scale: float, workers: list[int], stamp: str) -> Seeded:
    """One size's crowd work, ``scale`` units of it (see the module docstring), in bulk; then its
    consensus, as the worker keeps it (``campaign_aggregate``), so that the builds find it current."""
    from dialogs.models import EvaluationSet

    started = time.perf_counter()
    rows = 0
    tag = f"bench-preference-{stamp}-{label}"
    # The rewrite campaign: dialogs, their candidates, the raters' rewrites and judgments.
    rewrite = _campaign(f"{tag} rewrite", Campaign.Kind.GROUNDEDNESS_REWRITE, 3)
    rewrite_tag = f"{tag}-rewrite"
    count = round(REWRITE_ITEMS * scale)
    rows += sqldata.execute(
        _DIALOGS, {"tag": rewrite_tag, "purpose": "groundedness", "count": count, "per": 1}
    )
    rows += sqldata.execute(_TURNS, {"tag": rewrite_tag})
    rows += sqldata.execute(_TURN_ITEMS, {"campaign": rewrite.pk, "raters": 3, "tag": rewrite_tag})
    rows += sqldata.execute(_CANDIDATES, {"tag": rewrite_tag, "candidates": CANDIDATES})
    rows += _assign(rewrite, 3, workers)
    rows += sqldata.execute(_REWRITES, {"campaign": rewrite.pk})
    rows += sqldata.execute(_REWRITE_JUDGMENTS, {"campaign": rewrite.pk})
    # The rating campaigns over the same responses, several to a prompt.
    ratings_tag = f"{tag}-ratings"
    count = round(RATED_PROMPTS * scale) * RESPONSES
    rows += sqldata.execute(
        _DIALOGS, {"tag": ratings_tag, "purpose": "quality", "count": count, "per": RESPONSES}
    )
    rows += sqldata.execute(_TURNS, {"tag": ratings_tag})
    ssi = _campaign(f"{tag} ssi", Campaign.Kind.SSI, 5)
    safety = _campaign(f"{tag} safety", Campaign.Kind.SAFETY, 3)
    safety.objectives.add(SafetyObjective.objects.get(slug=OBJECTIVE))
    for campaign in (ssi, safety):
        raters = campaign.raters_per_item
        rows += sqldata.execute(_TURN_ITEMS, {"campaign": campaign.pk, "raters": raters, "tag": ratings_tag})
        rows += _assign(campaign, raters, workers)
    sqldata.execute(_SSI_ANSWERS, {"campaign": ssi.pk})
    rows += sqldata.execute(_SSI_JUDGMENTS)
    sqldata.execute("DROP TABLE answers")
    rows += sqldata.execute(_SAFETY_JUDGMENTS, {"campaign": safety.pk, "objective": OBJECTIVE})
    # The side-by-side campaign over an evaluation set.
    count = round(PAIRWISE_CONTEXTS * scale)
    evaluation_set = EvaluationSet.objects.create(
        name=f"{tag} set", version=1, source="bench", sha256="0" * 64, context_count=count
    )
    rows += sqldata.execute(_CONTEXTS, {"set": evaluation_set.pk, "count": count, "held": rewrite_tag})
    responders = [f"{tag}-a", f"{tag}-b"]
    rows += 4 * sqldata.execute(_ANSWERS, {"set": evaluation_set.pk, "responders": responders})
    pairwise = _campaign(
        f"{tag} side by side",
        Campaign.Kind.PAIRWISE,
        3,
        evaluation_set=evaluation_set,
        filters={"responder_a": responders[0], "responder_b": responders[1]},
    )
    rows += sqldata.execute(_PAIRWISE_ITEMS, {"campaign": pairwise.pk, "set": evaluation_set.pk})
    rows += _assign(pairwise, 3, workers)
    rows += sqldata.execute(_PAIRWISE_JUDGMENTS, {"campaign": pairwise.pk})
    sqldata.vacuum_analyze(*TABLES)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    for campaign in (rewrite, ssi, safety, pairwise):
        campaign_aggregate(campaign=campaign)
    sqldata.vacuum_analyze("annotation_consensuslabel")
    aggregate_s = time.perf_counter() - started
    say(
        f"  {label}: {rows:,} rows inserted in {seconds:.1f} s (dialogs, turns, candidates, items, "
        f"assignments, rewrites, judgments), consensus in {aggregate_s:.1f} s"
    )
    return Seeded(label, rewrite, ssi, safety, pairwise, rows, seconds, aggregate_s)
