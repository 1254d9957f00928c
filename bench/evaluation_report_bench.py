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
  ``Evaluation`` rows and 5,000 answers (dialogs, turns, ``EvaluationResponse``) written in bulk;
  then what the report page does, end to end: the loader's queries, the per-response values, the
  report, the chart and the page's HTML rendered (``TemplateResponse``), first view (resamples
  drawn) and second. The labels and outcomes are given to the loader as the selectors of
  ``annotation.selectors`` would give them: their two queries are not in the figure.
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

from bench.report import ROOT, Metric, print_table, say, write_results

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
    return evaluation_set, labels, outcomes


def bench_page(repeats: int) -> list[Metric]:
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.template.response import TemplateResponse
    from django.test import RequestFactory
    from django.urls import reverse

    from trainer.evaluation_report_loader import evaluation_set_report, set_resamples
    from trainer.views import report_page_context

    started = time.monotonic()
    evaluation_set, labels, outcomes = seed_database()
    say(f"page: seeded {len(labels):,} answers in {time.monotonic() - started:.1f} s")
    user = User(username="bench-report", is_superuser=True, is_staff=True)
    url = reverse("evaluation-report", args=[evaluation_set.pk])
    sizes: list[int] = []

    def view() -> None:
        # What trainer.views.evaluation_report_page does, with the labels given.
        request = RequestFactory().get(url)
        request.user = user
        report, inputs = evaluation_set_report(
            evaluation_set, params=request.GET, labels=labels, outcomes=outcomes
        )
        context = {**admin.site.each_context(request), **report_page_context(report, inputs, evaluation_set)}
        response = TemplateResponse(request, "admin/trainer/evaluation_report.html", context).render()
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
    if PART not in [part.strip() for part in args.parts.split(",")]:
        say(f"report benchmark skipped (--parts {args.parts} does not name {PART!r})")
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
    print()
    print_table(metrics)
    path = write_results(metrics, replace=[PREFIX, WALL])
    say(f"results merged into {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
