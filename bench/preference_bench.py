"""Benchmark of the preference-data export (``make bench``, part ``preference``; the bench database):
crowd work seeded in bulk at two sizes, N and 4N (N is ``--preference-scale`` units, default
``SCALE``: about 10,000 pairs), each made into a ``preference`` dataset by
``trainer.services.dataset_builds.dataset_build``, what the worker runs (the consensus brought up to
date, the units of ``trainer.preference_sources`` streamed into JSONL and Parquet, the manifest).
Each build runs in a forked process whose resident memory is read before it and at its peak
(VmHWM, reset when the build starts): the growth at 4N over the growth at N says whether the build
streams (goal ≤ 1.5; a build that held its rows would be near 4). Figures: pairs by source as the
manifest counts them, rows (pairs + KTO rows) per second and seconds of each build, the size of
its files, and the baseline: N's rating campaigns exported as a ``quality_safety`` dataset (the
export a user would otherwise run; it renders every row with the tokenizer), as a ratio of rows
per second. Then the N dataset's files are loaded with ``datasets`` (``load_dataset("json")`` and
``("parquet")``, pairs and KTO rows, both splits) and their rows checked against the manifest.

One unit of crowd work, all of it complete, answers drawn by a hash in SQL against a hidden truth:

- a groundedness rewrite campaign of ``REWRITE_ITEMS`` model turns (3 context turns each), 3 raters:
  on 85 % of the items every rater finds external claims not known to be true and writes a
  researched rewrite; on the others only one rater does, so the consensus says no research is
  needed and that rewrite is left out (counted). Each turn has ``CANDIDATES`` sampled candidates,
  half of them right, labelled correct or incorrect by the raters (right 85 % of the time; the
  third rater leaves 40 % unlabelled, so some candidates tie);
- an SSI campaign (5 raters, the cascade) and a safety campaign (3 raters, one objective) over the
  same ``RATED_PROMPTS`` x ``RESPONSES`` responses: each prompt (3 context turns) answered by
  ``RESPONSES`` model turns in dialogs of their own, so a prompt's responses are compared;
- a side-by-side campaign (3 raters) over an evaluation set of ``PAIRWISE_CONTEXTS`` contexts
  answered by two responders; one context in 50 was cut from a rewrite dialog, whose items are
  then held out of the dataset (counted).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import django

from bench.report import ROOT

# The datasets (and the benchmark's tokenizer) go to a scratch folder of their own, which this
# benchmark removes; the child processes that build read it from the environment too.
ARTIFACTS = ROOT / "var" / "bench" / "preference"
os.environ["ARTIFACTS_DIR"] = str(ARTIFACTS)
# The tokenizer is trained here before the builds are forked: no thread pool across a fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
django.setup()

from annotation.models import Campaign, SafetyObjective  # noqa: E402
from annotation.services.consensus import campaign_aggregate  # noqa: E402
from bench import sqldata  # noqa: E402
from bench.report import Metric, bench_database_refusal, finish, part_skipped, say  # noqa: E402

PART = "preference"
PREFIX = "preference."
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


def tokenizer_source(texts: list[str]) -> Any:
    """A model version whose tokenizer renders the ``quality_safety`` baseline (a preference
    dataset saves it beside its files too): trained on the benchmark's texts, no weights."""
    from trainer import tokenizer as tokenizers
    from trainer.models import ModelVersion
    from trainer.services.dataset_builds import tokenizer_sha256

    name = f"bench-preference-{os.getpid()}-tokenizer"
    directory = f"models/{name}"
    saved = tokenizers.save(tokenizers.train_tokenizer(texts, vocab_size=8192), ARTIFACTS / directory)
    return ModelVersion.objects.create(
        name=name, directory=directory, tokenizer_sha256=tokenizer_sha256(saved)
    )


# ------------------------------------------------------------------------------------------- builds


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def build_child(dataset_id: int) -> dict[str, Any]:
    """Run in a forked process: build the dataset as the worker does; its seconds and memory."""
    import gc

    from trainer.models import DatasetVersion
    from trainer.services import dataset_builds

    gc.collect()
    baseline = _status_kib("VmRSS")
    try:  # VmHWM back to the RSS now (Linux 4.0+): the peak is then the build's own
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    started = time.perf_counter()
    dataset = dataset_builds.dataset_build(dataset_id=dataset_id)
    seconds = time.perf_counter() - started
    if dataset.status != DatasetVersion.Status.READY:
        raise RuntimeError(f"dataset {dataset_id} is {dataset.status}: {dataset.error}")
    peak = _status_kib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "peak_reset": reset,
        "growth_mib": (peak - (baseline or 0)) / 1024,
    }


def _forked(dataset_id: int) -> dict[str, Any]:
    """``build_child`` in a forked process (fresh memory to measure, the modules already loaded: a
    new interpreter spends 15 s importing them here); its result through a pipe."""
    from django.db import connections

    connections.close_all()  # the child opens its own
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            payload = json.dumps(build_child(dataset_id))
        except BaseException as exc:  # reported by the parent
            payload = json.dumps({"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"})
            code = 1
        with os.fdopen(write, "w") as out:
            out.write(payload)
        connections.close_all()
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        received = pipe.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(received) if received else {"error": f"the build process ended with {status}"}
    if "error" in result:
        raise RuntimeError(f"build of dataset {dataset_id} failed: {result['error']}")
    return result


def _build(kind: str, campaigns: Sequence[Campaign], tokenizer: Any) -> tuple[Any, dict[str, Any]]:
    from trainer.models import DatasetVersion
    from trainer.services import requests

    dataset = requests.dataset_request(
        kind=kind,
        campaigns=campaigns,
        tokenizer_source=tokenizer,
        validation_percent=VALIDATION_PERCENT,
        enqueue=False,
    )
    result = _forked(dataset.pk)
    return DatasetVersion.objects.get(pk=dataset.pk), result


@dataclass
class Built:
    pairs: dict[str, int]
    kto: int
    rows: int
    seconds: float
    rows_per_s: float
    mib: float
    growth_mib: float
    manifest: dict[str, Any]
    path: Path


def build_preference(seeded: Seeded, tokenizer: Any) -> Built:
    dataset, result = _build("preference", seeded.all, tokenizer)
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    pairs = manifest["pairs_by_source"]
    kto = sum(manifest["unpaired_by_source"].values())
    rows = sum(pairs.values()) + kto
    data_bytes = sum(entry["bytes"] for name, entry in dataset.files.items() if name != "manifest.json")
    built = Built(
        pairs=pairs,
        kto=kto,
        rows=rows,
        seconds=result["seconds"],
        rows_per_s=rows / result["seconds"],
        mib=data_bytes / 2**20,
        growth_mib=result["growth_mib"],
        manifest=manifest,
        path=dataset.path,
    )
    skipped = {k: v for k, v in manifest["skipped"].items() if v}
    say(
        f"  {seeded.label} preference: {sum(pairs.values()):,} pairs "
        f"({', '.join(f'{k} {v:,}' for k, v in pairs.items())}) and {kto:,} KTO rows in "
        f"{built.seconds:.1f} s: {built.rows_per_s:,.0f} rows/s; files {built.mib:.1f} MiB; RSS "
        f"{result['baseline_kib'] / 1024:.0f} MiB before, peak {result['peak_kib'] / 1024:.0f} MiB "
        f"(growth {built.growth_mib:.0f} MiB{'' if result['peak_reset'] else ', VmHWM not reset'})"
    )
    say(f"    skipped: {', '.join(f'{k} {v:,}' for k, v in skipped.items())}")
    return built


def build_quality_safety(seeded: Seeded, tokenizer: Any) -> tuple[int, float]:
    """The baseline: the rating campaigns as a ``quality_safety`` dataset; its rows and seconds."""
    dataset, result = _build("quality_safety", [seeded.ssi, seeded.safety], tokenizer)
    rows = sum(sum(split.values()) for split in dataset.counts["splits"].values())
    say(
        f"  {seeded.label} quality_safety (the SSI and safety campaigns): {rows:,} rows in "
        f"{result['seconds']:.1f} s: {rows / result['seconds']:,.0f} rows/s "
        f"(growth {result['growth_mib']:.0f} MiB)"
    )
    return rows, result["seconds"]


def load_check(built: Built) -> tuple[int, int]:
    """Load every file with ``datasets`` (JSON and Parquet, pairs and KTO rows, both splits); the
    rows loaded and how many files' row counts differ from the manifest's."""
    import datasets

    from trainer import records
    from trainer.services.preference_builds import UNPAIRED_PREFIX

    datasets.disable_progress_bars()
    cache = str(built.path.parent / "hf-cache")
    loaded = mismatched = 0
    for prefix, counted in (("", "pairs/"), (UNPAIRED_PREFIX, "kto/")):
        for fmt in ("json", "parquet"):
            files = records.data_files(built.path, fmt, prefix=prefix)
            found = datasets.load_dataset(fmt, data_files=files, cache_dir=cache)
            for split in records.SPLITS:
                expected = sum(v for k, v in built.manifest["counts"][split].items() if k.startswith(counted))
                loaded += found[split].num_rows
                mismatched += int(found[split].num_rows != expected)
    shutil.rmtree(cache, ignore_errors=True)
    say(f"  datasets.load_dataset: {loaded:,} rows from 8 files, {mismatched} differ from the manifest")
    return loaded, mismatched


def bench_preference(scale: float) -> list[Metric]:
    sizes = {"N": scale, "4N": 4 * scale}
    say(
        f"preference: crowd work at N ({scale:g} unit{'s' if scale != 1 else ''}) and 4N, each built as a "
        "preference dataset in a forked process; quality_safety of N's rating campaigns as the baseline"
    )
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    SafetyObjective.objects.get_or_create(slug=OBJECTIVE, defaults={"name": "Harm", "guidance": "Harm."})
    try:
        return _bench(sizes)
    finally:
        shutil.rmtree(ARTIFACTS, ignore_errors=True)
        say(f"  removed {ARTIFACTS.relative_to(ROOT)}")


def _bench(sizes: dict[str, float]) -> list[Metric]:
    stamp = str(os.getpid())
    workers = sqldata.create_users(f"bench-preference-{stamp}-", POOL)
    seeded = {label: seed(label, units, workers, stamp) for label, units in sizes.items()}
    sample = [*seeded["N"].ssi.items.order_by("pk")[:2000], *seeded["N"].rewrite.items.order_by("pk")[:2000]]
    texts = [text for item in sample for text in (item.response, *(t["text"] for t in item.context))]
    tokenizer = tokenizer_source(texts)
    built = {label: build_preference(s, tokenizer) for label, s in seeded.items()}
    loaded, mismatched = load_check(built["N"])
    seeding = sum(s.seconds + s.aggregate_s for s in seeded.values())
    small, big = built["N"], built["4N"]
    metrics = [
        *(Metric(f"{PREFIX}4N pairs, {source}", n, "pairs") for source, n in big.pairs.items()),
        Metric(f"{PREFIX}4N KTO rows", big.kto, "rows"),
    ]
    for label, b in built.items():
        metrics += [
            Metric(f"{PREFIX}{label} rows (pairs + KTO)", b.rows, "rows"),
            Metric(f"{PREFIX}{label} build", b.seconds, "s"),
            Metric(f"{PREFIX}{label} rows/s", b.rows_per_s, "rows/s"),
            Metric(f"{PREFIX}{label} files (JSONL + Parquet)", b.mib, "MiB"),
            Metric(f"{PREFIX}{label} peak memory growth", b.growth_mib, "MiB"),
        ]
    metrics.append(
        Metric(f"{PREFIX}peak memory growth 4N / N", big.growth_mib / small.growth_mib, "x", "≤ 1.5")
    )
    rows, seconds = build_quality_safety(seeded["N"], tokenizer)
    metrics += [
        Metric(f"{PREFIX}N quality_safety rows/s (baseline)", rows / seconds, "rows/s"),
        Metric(f"{PREFIX}N rows/s, preference / quality_safety", small.rows_per_s / (rows / seconds), "x"),
    ]
    metrics += [
        Metric(f"{PREFIX}N rows loaded by datasets (JSON + Parquet)", loaded, "rows"),
        Metric(f"{PREFIX}N files whose rows differ from the manifest", mismatched, "files", "= 0"),
        Metric(f"{PREFIX}seeding N + 4N (bulk SQL, consensus)", seeding, "s"),
    ]
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument(
        "--preference-scale",
        type=float,
        default=SCALE,
        help="units of crowd work at size N (4N is four times it)",
    )
    args, _others = parser.parse_known_args(argv)
    if part_skipped(args.parts, PART, "preference"):
        return 0
    refusal = bench_database_refusal()
    if refusal:
        print(f"refusing to run: {refusal}")
        return 2
    started = time.monotonic()
    metrics = bench_preference(args.preference_scale)
    metrics.append(Metric(f"{PREFIX}part wall time", time.monotonic() - started, "s"))
    finish(metrics, replace=[PREFIX])
    return 0


if __name__ == "__main__":
    sys.exit(main())
