"""Benchmark of the evaluation report (``make bench``, part ``report``): 20 model versions × 10
metrics over 5,000 rated responses (an evaluation set of 250 contexts, every version answering
every one); goal: under 300 ms.

Every response is rated in every campaign kind (SSI, safety, groundedness, helpfulness), so all
10 metrics have values, groundedness and citation accuracy on part of the contexts as their rules
say: the most work a report of that size can do. Labels are drawn seeded (version i says yes with
probability 0.45 + 0.02 i, SSI's cascade kept); the two latest versions were compared side by
side on every context; every version has ``Evaluation.metrics``. Figures are medians of
``--repeats`` runs of wall-clock time; CPU-bound, so on a shared machine other processes show up
as slower runs: the CPU time of this process is printed beside it (and for the page's first view
kept as a figure).

- **core** (no database): ``trainer.evaluation_report.evaluation_report`` with its chart and JSON,
  the set's 2,000 bootstrap resamples drawn in the run (a first report of a set in a process),
  and again with them kept (every later one); and the labels' way to per-response values
  (``response_values`` of 5,000 responses).
- **page** (the bench database): the set, its 250 contexts, 20 model versions with their
  ``Evaluation`` rows and 5,000 answers (dialogs, turns, ``EvaluationResponse``), the set's four
  blind rating campaigns with an item per answer each (20,000 complete items, about 60,000
  consensus labels) and a side-by-side campaign of the two latest versions, written in bulk; then
  the report page's view itself (``trainer.views.evaluation_report_page``) over a request: the
  loader's queries with ``annotation.selectors``' label and outcome queries, the per-response
  values, the report, the chart and the page's HTML, first view (resamples drawn) and later ones.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.report import Metric, finish, part_skipped, say

PART = "report"
PREFIX = "report: "
WALL = "evaluation_report_bench.wall_s"
SEED = 20261205
VERSIONS = 20
CONTEXTS = 250
GOAL = "≤ 300"
ATTRIBUTES = (
    "sensible",
    "specific",
    "interesting",
    "safety",
    "claims_external",
    "well_known",
    "factually_correct",
    "cites_source",
    "helpful",
    "role_consistent",
)


def version_names() -> list[str]:
    return [f"bench-report-{i + 1}" for i in range(VERSIONS)]


def labels_of(rng: random.Random, version: int) -> dict[str, int]:
    """One response's consensus labels in every campaign kind, the cascades kept."""
    p = 0.45 + 0.02 * version
    labels = {attribute: int(rng.random() < p) for attribute in ATTRIBUTES}
    labels["specific"] &= labels["sensible"]
    labels["interesting"] &= labels["specific"]
    labels["harm"] = 1 - labels["safety"]
    labels["understandable"] = 1
    return labels


def automatic(version: int) -> dict[str, Any]:
    return {
        "discriminators": {"SENSIBLE": 0.5 + version / 100, "SPECIFIC": 0.4, "UNSAFE": 0.1},
        "hits_at_1": 0.1 + version / 100,
        "hits_candidates": 20,
        "hits_contexts": CONTEXTS,
        "validation_loss": 4.0 - version / 20,
        "contexts_per_second": 10.0,
        "fallbacks": 0,
    }


def timed_ms(
    run: Callable[[], Any], repeats: int, before: Callable[[], Any] | None = None
) -> tuple[float, float]:
    """The median wall-clock and the median CPU time of this process, in ms, over ``repeats`` runs
    (``before`` runs untimed before each). The CPU time leaves out what other programs on a
    shared machine took meanwhile (and the database's own work)."""
    walls, cpus = [], []
    for _ in range(repeats):
        if before is not None:
            before()
        started, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


# ----------------------------------------------------------------------------------------------- core


def bench_core(repeats: int) -> list[Metric]:
    from annotation.statistics import ContextResamples
    from trainer.evaluation_report import evaluation_report, report_chart, report_json, response_values

    rng = random.Random(SEED)  # noqa: S311 - seeded test data, not secrets
    names = version_names()
    contexts = list(range(CONTEXTS))
    labels = {name: {c: labels_of(rng, i) for c in contexts} for i, name in enumerate(names)}
    outcomes = [(names[-1], names[-2], c, rng.choice(("a", "a", "b", "tie"))) for c in contexts]
    metrics = {name: automatic(i) for i, name in enumerate(names)}

    def values() -> dict[str, dict[int, dict[str, float | None]]]:
        return {name: {c: response_values(found) for c, found in per.items()} for name, per in labels.items()}

    converted = values()
    kept = ContextResamples(contexts)

    def report(resampled: ContextResamples | None) -> None:
        made = evaluation_report(
            contexts=contexts, values=converted, automatic=metrics, outcomes=outcomes, resampled=resampled
        )
        report_chart(made, "bench")
        report_json(made)

    convert_ms, _ = timed_ms(values, repeats)
    cold_ms, cold_cpu = timed_ms(lambda: report(None), repeats)
    warm_ms, warm_cpu = timed_ms(lambda: report(kept), repeats)
    say(
        f"core: {cold_ms:.0f} ms ({cold_cpu:.0f} ms CPU) with the resamples drawn, {warm_ms:.0f} ms "
        f"({warm_cpu:.0f} ms CPU) kept; labels to values {convert_ms:.0f} ms"
    )
    size = f"{VERSIONS} versions × 10 metrics, {VERSIONS * CONTEXTS:,} responses"
    return [
        Metric(f"{PREFIX}core, {size}, resamples drawn", cold_ms, "ms", GOAL),
        Metric(f"{PREFIX}core, {size}, resamples kept", warm_ms, "ms", GOAL),
        Metric(f"{PREFIX}labels to per-response values, {VERSIONS * CONTEXTS:,} responses", convert_ms, "ms"),
    ]


# ----------------------------------------------------------------------------------------------- page


def seed_database() -> tuple[Any, dict[int, dict[str, int]], list[tuple[str, str, int, str]]]:
    """The set, versions, evaluations and answers, in bulk; the labels and outcomes by response."""
    from dialogs.evaluation_responses import EVALUATION_SOURCE
    from dialogs.evaluation_sets import evaluation_set_import, parse_objects
    from dialogs.models import Dialog, EvaluationResponse, Turn
    from trainer.models import Evaluation, ModelVersion

    rng = random.Random(SEED)  # noqa: S311 - seeded test data, not secrets
    stamp = f"{os.getpid()}-{time.time_ns()}"
    objects = [
        {"id": f"c{i}", "purpose": "quality", "context": [{"speaker": "user", "text": f"Question {i}?"}]}
        for i in range(CONTEXTS)
    ]
    imported = evaluation_set_import(name=f"bench-report-{stamp}", records=parse_objects(objects))
    evaluation_set = imported.evaluation_set
    contexts = list(evaluation_set.contexts.order_by("index"))
    names = [f"{name}-{stamp}" for name in version_names()]
    versions = ModelVersion.objects.bulk_create(
        ModelVersion(name=name, directory=f"models/{name}", tokenizer_sha256="b" * 64) for name in names
    )
    Evaluation.objects.bulk_create(
        Evaluation(
            evaluation_set=evaluation_set,
            model_version=version,
            status=Evaluation.Status.DONE,
            done=CONTEXTS,
            total=CONTEXTS,
            metrics=automatic(i),
        )
        for i, version in enumerate(versions)
    )
    dialogs = Dialog.objects.bulk_create(
        Dialog(
            external_id=f"evaluation-{context.pk}-{name}",
            purpose="quality",
            source=EVALUATION_SOURCE,
            meta={"evaluation_set": evaluation_set.pk, "context": context.external_id},
        )
        for name in names
        for context in contexts
    )
    turns = []
    for d, dialog in enumerate(dialogs):
        name, context = names[d // CONTEXTS], contexts[d % CONTEXTS]
        turns.append(Turn(dialog=dialog, index=0, speaker="user", text=context.turns[0]["text"]))
        turns.append(Turn(dialog=dialog, index=1, speaker="model", text=f"{name} says", model_version=name))
    Turn.objects.bulk_create(turns)
    responses = EvaluationResponse.objects.bulk_create(
        EvaluationResponse(context=contexts[d % CONTEXTS], responder=names[d // CONTEXTS], turn=answer)
        for d, answer in enumerate(turns[1::2])
    )
    labels = {r.pk: labels_of(rng, names.index(r.responder)) for r in responses}
    outcomes = [(names[-1], names[-2], c.pk, rng.choice(("a", "a", "b", "tie"))) for c in contexts]
    seed_labels(evaluation_set, stamp, responses, labels, outcomes)
    return evaluation_set, labels, outcomes


# Which rating campaign of the set labels which attributes (annotation.rules), and its raters.
CAMPAIGN_ATTRIBUTES: dict[str, tuple[int, tuple[str, ...]]] = {
    "ssi": (5, ("sensible", "specific", "interesting", "understandable")),
    "safety": (3, ("safety", "harm")),
    "groundedness_eval": (3, ("claims_external", "well_known", "factually_correct", "cites_source")),
    "helpfulness": (3, ("helpful", "role_consistent")),
}


def seed_labels(
    evaluation_set: Any,
    stamp: str,
    responses: Sequence[Any],
    labels: dict[int, dict[str, int]],
    outcomes: Sequence[tuple[str, str, int, str]],
) -> None:
    """The set's blind rating campaigns, a complete item per answer in each with its consensus
    labels, and the side-by-side campaign's items with theirs: what ``annotation.selectors``
    reads for the report, in bulk (``annotation.services`` would compute the same rows from
    judgments, at a cost this benchmark is not about)."""
    from django.db import connection

    from annotation import rules
    from annotation.models import Campaign, ConsensusLabel, Item

    def label(item: Any, attribute: str, value: int, raters: int) -> Any:
        return ConsensusLabel(
            item=item,
            attribute=attribute,
            label=value,
            yes=raters if value else 0,
            no=0 if value else raters,
            maybe=0,
            yes_fraction=float(value),
            rules_version=rules.RULES_VERSION,
        )

    rows: list[Any] = []
    for kind, (raters, attributes) in CAMPAIGN_ATTRIBUTES.items():
        campaign = Campaign.objects.create(
            name=f"bench-report-{kind}-{stamp}",
            kind=kind,
            raters_per_item=raters,
            evaluation_set=evaluation_set,
        )
        items = Item.objects.bulk_create(
            Item(
                campaign=campaign,
                key=f"response-{response.pk}",
                turn_id=response.turn_id,
                evaluation_context_id=response.context_id,
                response="",
                open_slots=0,
                judgment_count=raters,
            )
            for response in responses
        )
        rows += [
            label(item, attribute, labels[response.pk][attribute], raters)
            for item, response in zip(items, responses, strict=True)
            for attribute in attributes
        ]
    a, b = outcomes[0][:2]
    pairwise = Campaign.objects.create(
        name=f"bench-report-pairwise-{stamp}",
        kind=Campaign.Kind.PAIRWISE,
        raters_per_item=3,
        evaluation_set=evaluation_set,
        filters={"responder_a": a, "responder_b": b},
    )
    items = Item.objects.bulk_create(
        Item(
            campaign=pairwise,
            key=f"pair-{context}",
            evaluation_context_id=context,
            response="",
            open_slots=0,
            judgment_count=3,
        )
        for _, _, context, _ in outcomes
    )
    for item, (_, _, _, outcome) in zip(items, outcomes, strict=True):
        rows += [
            label(item, rules.A_BETTER, int(outcome == "a"), 3),
            label(item, rules.B_BETTER, int(outcome == "b"), 3),
        ]
    ConsensusLabel.objects.bulk_create(rows, batch_size=5_000)
    # What autovacuum does soon after a bulk load: without statistics the planner takes the new
    # tables for empty and joins 60,000 labels row by row (about twice the time).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def bench_page(repeats: int) -> list[Metric]:
    from django.contrib.auth.models import User
    from django.test import RequestFactory
    from django.urls import reverse

    from trainer.evaluation_report_loader import set_resamples
    from trainer.views import evaluation_report_page

    started = time.monotonic()
    evaluation_set, labels, _outcomes = seed_database()
    say(f"page: seeded {len(labels):,} answers and their labels in {time.monotonic() - started:.1f} s")
    user = User(username="bench-report", is_superuser=True, is_staff=True)
    url = reverse("evaluation-report", args=[evaluation_set.pk])
    sizes: list[int] = []

    def view() -> None:
        request = RequestFactory().get(url)
        request.user = user
        response = evaluation_report_page(request, evaluation_set.pk)
        response.render()
        if response.status_code != 200:
            raise RuntimeError(f"the report page answered {response.status_code}")
        sizes.append(len(response.content))

    first_ms, first_cpu = timed_ms(view, repeats, before=set_resamples.cache_clear)
    second_ms, second_cpu = timed_ms(view, repeats)
    say(
        f"page: first view {first_ms:.0f} ms ({first_cpu:.0f} ms CPU), later {second_ms:.0f} ms "
        f"({second_cpu:.0f} ms CPU); {sizes[-1] / 1024:.0f} KiB of HTML"
    )
    size = f"{VERSIONS} versions × 10 metrics, {len(labels):,} responses"
    return [
        Metric(f"{PREFIX}page end to end, {size}, first view", first_ms, "ms", GOAL),
        Metric(f"{PREFIX}page end to end, {size}, later views", second_ms, "ms", GOAL),
        Metric(f"{PREFIX}page, first view, CPU time of the web process", first_cpu, "ms"),
    ]


# ----------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=PART, help=f"comma-separated; runs only if it names {PART!r}")
    parser.add_argument("--repeats", type=int, default=7, help="runs of each measurement (the median counts)")
    parser.add_argument("--no-page", action="store_true", help="the core only (no database)")
    args, _others = parser.parse_known_args(argv)  # the other benchmarks' arguments
    if part_skipped(args.parts, PART, "report"):
        return 0
    started = time.monotonic()
    metrics = bench_core(args.repeats)
    if not args.no_page:
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "groundwork.settings")
        django.setup()
        from django.conf import settings

        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.postgresql" or not database["NAME"].endswith("_bench"):
            name = database["NAME"]
            print(f"refusing the page part: DATABASE_URL must name a PostgreSQL *_bench database: {name!r}")
            return 2
        metrics += bench_page(args.repeats)
    metrics.append(Metric(WALL, time.monotonic() - started, "s"))
    finish(metrics, replace=[PREFIX, WALL])
    return 0


if __name__ == "__main__":
    sys.exit(main())
