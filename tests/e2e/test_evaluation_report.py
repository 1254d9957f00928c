"""Issue 15's first done-when, in Chromium against the live server, with real workers (the
``training`` queue answers the set, the default queue computes consensus labels):

- a researcher imports a five-context set (quality, safety, two groundedness, role) on the admin's
  upload page, presses Evaluate for the first model and for a fine-tune of it on their model version
  pages, starts the human baseline and creates a side-by-side campaign (fine-tune against first
  model) on the annotation admin's Evaluation sets page;
- a crowdworker writes the human baseline on ``/work/`` (every context: one writer per item, and a
  writer left holding a lease would keep the item from anyone else);
- crowdworkers rate every response blind and compare the pairs. Rater 0 does every kind in the
  browser (SSI, safety, groundedness, helpfulness, side by side); the others (SSI needs 5 raters,
  the rest 3) go through the crowd API (``/api/v1/tasks/next``, ``/api/v1/assignments/{id}/submit``)
  with their tokens, over real HTTP to the live server. Some API raters send answers to questions
  the cascade does not ask, which must count "no";
- the report page shows the chart (one bar group per metric, a bar per responder) and every metric
  of every responder with its interval and n, the fine-tune minus the first model, and the
  side-by-side win rate; its JSON and CSV over the API (``GET /api/v1/evaluation-sets/{id}/report``)
  give the same figures as the page (both are held to the same expected ones).

The expected figures are computed by ``tests/e2e/evaluation_plan.py`` from the judgments made, by
METHOD.md's rules written out again there (no product code), so the report must agree with a
second reading of the rules, not with itself.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from playwright.sync_api import Page, expect

from annotation import selectors
from annotation.models import Assignment, Campaign, Item, SafetyObjective
from annotation.questions import campaign_questions
from dialogs.models import HUMAN_RESPONDER, EvaluationResponse, EvaluationSet
from groundwork.roles import Role
from tests.e2e import evaluation_plan as plan
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, RoleFactory, UserFactory
from tests.trainer.helpers import labelled_campaigns, tiny_model
from trainer.evaluation_report import METRICS
from trainer.models import DatasetVersion, Evaluation, ModelVersion, TrainingJob
from trainer.services import dataset_builds, training_jobs
from trainer.services import requests as trainer_requests

pytestmark = pytest.mark.django_db(transaction=True)

SET_NAME = "mini"
CAMPAIGN = {  # campaign kind -> the name the set's campaign gets
    "ssi": f"{SET_NAME} v1 · SSI",
    "safety": f"{SET_NAME} v1 · Safety",
    "groundedness_eval": f"{SET_NAME} v1 · Groundedness",
    "helpfulness": f"{SET_NAME} v1 · Helpfulness",
    "pairwise": f"{SET_NAME} v1 · Side by side",
    "human_response": f"{SET_NAME} v1 · Human baseline",
}
RATERS = {"ssi": 5, "safety": 3, "groundedness_eval": 3, "helpfulness": 3, "pairwise": 3}
SLOW = 20_000  # ms: a page's answer on the shared test machine


def _versions() -> tuple[ModelVersion, ModelVersion]:
    """The first model and a fine-tune of it (quality and safety, on imported labels), trained in
    the foreground on tiny settings as the trainer tests do."""
    first = tiny_model()
    ssi, safety = labelled_campaigns(items=8)
    dataset = trainer_requests.dataset_request(
        kind="quality_safety", campaigns=[ssi, safety], validation_percent=50, enqueue=False
    )
    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)
    assert dataset.status == DatasetVersion.Status.READY, dataset.error
    job = trainer_requests.training_request(
        kind="finetune_quality_safety",
        datasets=[dataset],
        base_model=first,
        hyperparameters={"steps": 2},
        enqueue=False,
    )
    job = training_jobs.training_run(job_id=job.pk)
    assert job.status == TrainingJob.Status.SUCCEEDED, job.error + job.log
    return first, job.model_version


def _objectives() -> None:
    """The safety campaign asks about exactly the plan's objectives (a transactional test before
    this one may have flushed the seeded ones, or left them)."""
    for slug, name in plan.OBJECTIVES.items():
        SafetyObjective.objects.update_or_create(
            slug=slug, defaults={"name": name, "guidance": f"{name}.", "active": True}
        )
    SafetyObjective.objects.exclude(slug__in=plan.OBJECTIVES).update(active=False)


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


# --- what a worker is given, and what the plan says they answer ---------------------------------


def _leased(worker: User, kind: str) -> Item:
    """The item the worker holds in the set's campaign of ``kind`` (the page shows it)."""
    assignment = Assignment.objects.select_related("item__campaign", "item__evaluation_context").get(
        worker=worker, state=Assignment.State.LEASED, item__campaign__name=CAMPAIGN[kind]
    )
    return assignment.item


def _key(item: Item, aliases: dict[str, str]) -> plan.Key:
    """(responder alias, context id) of a rating item: whose response it is, which the rater is
    never told but the test knows."""
    response = EvaluationResponse.objects.select_related("context").get(turn_id=item.turn_id)
    return aliases[response.responder], response.context.external_id


def _choice(item: Item, rater: int) -> str:
    """What the page's choice is for the plan's outcome (a, b or tie), given which response the
    item shows first."""
    wanted = plan.PAIRWISE[item.evaluation_context.external_id][rater]
    if wanted == "tie":
        return "tie"
    return "1" if item.pair["first"] == wanted else "2"


def _body(kind: str, item: Item, rater: int, aliases: dict[str, str]) -> dict[str, Any]:
    """The API submission of rater ``rater`` for ``item``."""
    if kind == "pairwise":
        return {"choice": _choice(item, rater)}
    return {"answers": plan.RATINGS[kind][_key(item, aliases)][rater]}


# --- in the browser ----------------------------------------------------------------------------


def _radio(scope: Any, label: str) -> Any:
    return scope.get_by_role("radio", name=re.compile(rf"^{re.escape(label)}(\s|$)"))


def _answer_questions(page: Page, campaign: Campaign, rating: plan.Rating) -> None:
    """Answer the rating page's questions as ``rating`` says; a question the cascade does not ask
    is hidden, and left alone."""
    for question in campaign_questions(campaign):
        group = page.get_by_role("group", name=question.label, exact=True)
        if not plan.asked(rating, question.attribute):
            expect(group).to_be_hidden()
            continue
        value = rating[question.attribute]
        _radio(group, {"yes": "Yes", "no": "No", "maybe": question.maybe_label}[value]).check()


def _work_in_browser(
    page: Page, base: str, worker: User, kind: str, do: Callable[[Item], None], heading: str
) -> int:
    """From ``/work/``, do every item the set's campaign of ``kind`` gives ``worker``, one at a
    time as the page shows them, until nothing is left; how many."""
    page.goto(f"{base}/work/")
    page.get_by_role("link", name=f"Start {CAMPAIGN[kind]}").click()
    page.wait_for_load_state()
    counter = page.locator(".counter")
    done = 0
    expect(counter).to_contain_text("Done today: 0 ·")
    while page.get_by_role("heading", name=heading).is_visible():
        do(_leased(worker, kind))
        page.get_by_role("button", name="Submit", exact=True).click()
        done += 1
        expect(counter).to_contain_text(f"Done today: {done} ·", timeout=SLOW)
    expect(page.get_by_role("heading", name="Nothing left for you in this campaign")).to_be_visible()
    return done


def _rate_in_browser(page: Page, base: str, worker: User, kind: str, aliases: dict[str, str]) -> int:
    def rate(item: Item) -> None:
        # The page shows the item leased (a tiny model's words, between stray bytes).
        for word in re.findall(r"[A-Za-z]{4,}", item.response)[:3]:
            expect(page.get_by_role("region", name="Response to rate")).to_contain_text(word)
        _answer_questions(page, item.campaign, plan.RATINGS[kind][_key(item, aliases)][0])

    return _work_in_browser(page, base, worker, kind, rate, "Rate this response")


def _compare_in_browser(page: Page, base: str, worker: User) -> int:
    def compare(item: Item) -> None:
        choice = _choice(item, 0)
        label = {"1": "Response 1", "2": "Response 2", "tie": "About the same"}[choice]
        _radio(page, label).check()

    return _work_in_browser(page, base, worker, "pairwise", compare, "Which response is better?")


def _write_in_browser(page: Page, base: str, worker: User) -> int:
    def write(item: Item) -> None:
        text = plan.HUMAN_TEXTS[item.evaluation_context.external_id]
        page.get_by_role("textbox", name="Your response").fill(text)

    return _work_in_browser(page, base, worker, "human_response", write, "Write the next turn")


# --- over the API ------------------------------------------------------------------------------


def _api_client(base: str, worker: User) -> requests.Session:
    """A crowd client with the worker's API token, over HTTP to the live server."""
    client = requests.Session()
    answer = client.post(
        f"{base}/api/v1/auth/token/", json={"username": worker.username, "password": DEFAULT_PASSWORD}
    )
    assert answer.status_code == 200, answer.text
    client.headers["Authorization"] = f"Token {answer.json()['token']}"
    return client


def _work_over_api(
    client: requests.Session, base: str, kind: str, rater: int, aliases: dict[str, str]
) -> int:
    """Every item of the set's campaign of ``kind`` left for the client's worker, submitted as
    the plan says for rater ``rater``; how many."""
    campaign = Campaign.objects.get(name=CAMPAIGN[kind])
    answer = client.get(f"{base}/api/v1/tasks/next", params={"campaign": campaign.pk})
    task = answer.json() if answer.status_code == 200 else None
    done = 0
    while task is not None:
        shown = json.dumps(task)
        assert not [name for name in aliases if name != HUMAN_RESPONDER and name in shown], task  # blind
        item = Item.objects.select_related("evaluation_context", "campaign").get(
            assignments__pk=task["assignment_id"]
        )
        body = _body(kind, item, rater, aliases)
        answer = client.post(f"{base}/api/v1/assignments/{task['assignment_id']}/submit", json=body)
        assert answer.status_code == 201, answer.text
        done += 1
        task = answer.json()["next"]
    return done


# --- the report --------------------------------------------------------------------------------


def _fixed(value: float) -> str:
    return f"{value:.3f}"


def _cell_text(cell: plan.Cell) -> str:
    return f"{_fixed(cell.estimate)} [{_fixed(cell.low)}, {_fixed(cell.high)}] n = {cell.n}"


def _check_report_page(page: Page, names: dict[str, str], expected: dict[str, dict[str, plan.Cell]]) -> None:
    """The chart, the metrics table, the comparison and the win rate, as the page shows them."""
    chart = page.locator("#chart svg.report-chart")
    expect(chart).to_be_visible()
    # Playwright's 1280 × 720 window: the chart of three responders shrinks to fit, no sideways scroll.
    box = page.locator("#chart .report-chart-box")
    assert box.evaluate("b => b.scrollWidth <= b.clientWidth"), box.evaluate(
        "b => [b.scrollWidth, b.clientWidth]"
    )
    expect(chart.locator("text.group-label")).to_have_text([metric.short for metric in METRICS])
    expect(chart.locator("g.legend")).to_have_count(3)
    tips = {
        f"{names[alias]} · {metric.short}: {_cell_text(cells[metric.key]).replace(' n =', ', n =')}"
        for alias, cells in expected.items()
        for metric in METRICS
    }
    expect(chart.locator("g.bar")).to_have_count(len(tips))  # every responder, every metric
    assert set(chart.locator("g.bar > title").all_text_contents()) == tips

    table = page.locator("#metrics table")
    expect(table.locator("thead th")).to_have_text(
        ["responder", "evaluation", "rated"] + [metric.label for metric in METRICS]
    )
    for alias, cells in expected.items():
        header = "human baseline" if alias == "human" else names[alias]
        row = table.locator("tbody tr").filter(has=page.get_by_role("rowheader", name=header, exact=True))
        shown = [" ".join(text.split()) for text in row.locator("td").all_inner_texts()]
        status = "crowdworkers" if alias == "human" else "Done (5/5)"
        assert shown == [status, "5"] + [_cell_text(cells[metric.key]) for metric in METRICS], alias

    compared = page.locator("#compare table.comparison")
    differences = plan.expected_differences("finetune", "first")
    for metric in METRICS:
        d = differences[metric.key]
        label = page.get_by_role("cell", name=metric.label, exact=True)
        line = compared.locator("tbody tr").filter(has=label)
        expect(line.locator("td").nth(3)).to_have_text(f"{d.estimate:+.3f}")
        expect(line.locator("td").nth(4)).to_have_text(f"[{d.low:+.3f}, {d.high:+.3f}]")
        expect(line.locator("td").nth(5)).to_have_text(str(d.n))

    wins = plan.expected_win_rate()
    expect(page.locator("#win-rates tbody tr")).to_have_count(1)
    shown = [" ".join(text.split()) for text in page.locator("#win-rates tbody tr td").all_inner_texts()]
    assert shown[:7] == [
        names["finetune"],
        names["first"],
        str(wins.wins),
        str(wins.ties),
        str(wins.losses),
        _fixed(wins.rate),
        f"[{_fixed(wins.low)}, {_fixed(wins.high)}]",
    ]


def _check_report_json(
    report: dict[str, Any], names: dict[str, str], expected: dict[str, dict[str, plan.Cell]]
) -> None:
    by_name = {row["responder"]: row for row in report["rows"]}
    assert list(by_name) == [names["first"], names["finetune"], HUMAN_RESPONDER]
    for alias, cells in expected.items():
        row = by_name[names[alias]]
        assert row["rated"] == len(plan.CONTEXTS)
        for metric in METRICS:
            cell, got = cells[metric.key], row["metrics"][metric.key]
            assert (got["estimate"], got["low"], got["high"], got["n"]) == pytest.approx(
                (cell.estimate, cell.low, cell.high, cell.n)
            ), (alias, metric.key)
    for alias in ("first", "finetune"):
        evaluation = Evaluation.objects.get(model_version__name=names[alias])
        assert by_name[names[alias]]["automatic"]["hits_at_1"] == evaluation.metrics["hits_at_1"]
    (comparison,) = report["comparisons"]
    assert (comparison["a"], comparison["b"]) == (names["finetune"], names["first"])
    for key, d in plan.expected_differences("finetune", "first").items():
        got = comparison["differences"][key]
        assert (got["estimate"], got["low"], got["high"], got["n"]) == pytest.approx(
            (d.estimate, d.low, d.high, d.n)
        ), key
    wins = plan.expected_win_rate()
    (pair,) = report["win_rates"]
    assert (pair["a"], pair["b"], pair["wins"], pair["ties"], pair["losses"]) == (
        names["finetune"],
        names["first"],
        wins.wins,
        wins.ties,
        wins.losses,
    )
    assert (pair["rate"], pair["low"], pair["high"]) == pytest.approx((wins.rate, wins.low, wins.high))
    assert comparison["win_rate"] == {key: pair[key] for key in comparison["win_rate"]}


def _check_report_csv(text: str, names: dict[str, str], expected: dict[str, dict[str, plan.Cell]]) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(expected) * len(METRICS)
    got = {(row["responder"], row["metric"]): row for row in rows}
    for alias, cells in expected.items():
        for metric in METRICS:
            row, cell = got[names[alias], metric.key], cells[metric.key]
            numbers = (float(row["value"]), float(row["low"]), float(row["high"]), int(row["n"]))
            assert numbers == pytest.approx((cell.estimate, cell.low, cell.high, cell.n)), (alias, metric.key)


# --- the test ----------------------------------------------------------------------------------


def test_a_researcher_evaluates_two_versions_and_a_human_baseline_and_reads_the_report(
    page: Page, live_server: Any, celery_worker: None, training_worker: subprocess.Popen
) -> None:
    expected = plan.expected_cells()
    for responder, intended in plan.INTENDED.items():  # the plan gives what it is meant to
        assert {k: c.estimate for k, c in expected[responder].items()} == pytest.approx(intended)
    base = live_server.url
    _objectives()
    RoleFactory(**plan.ROLE)
    first, finetune = _versions()
    names = {"first": first.name, "finetune": finetune.name, "human": HUMAN_RESPONDER}
    aliases = {name: alias for alias, name in names.items()}
    researcher = UserFactory(role=Role.RESEARCHER)
    writer = UserFactory(role=Role.CROWDWORKER)
    raters = [UserFactory(role=Role.CROWDWORKER) for _ in range(5)]

    # The researcher imports the set, evaluates both versions, starts the human baseline and a
    # side-by-side comparison.
    log_in(page, base, researcher.username, DEFAULT_PASSWORD)
    page.goto(f"{base}/admin/dialogs/evaluationset/add/")
    page.get_by_label("Name").fill(SET_NAME)
    page.get_by_label("JSONL file").set_input_files(
        files=[{"name": "mini.jsonl", "mimeType": "application/x-ndjson", "buffer": plan.set_jsonl()}]
    )
    page.get_by_role("button", name="Import").click()
    expect(page.get_by_text(f"5 contexts imported as {SET_NAME} v1.")).to_be_visible()
    evaluation_set = EvaluationSet.objects.get(name=SET_NAME)

    for version in (first, finetune):
        page.goto(f"{base}/admin/trainer/modelversion/{version.pk}/change/")
        page.locator("#evaluations").get_by_label("Evaluation set").select_option(str(evaluation_set.pk))
        page.locator("#evaluations").get_by_role("button", name="Evaluate").click()
        panel = page.locator("#evaluation-panel")
        expect(panel).to_contain_text("Done", timeout=180_000)
        expect(panel).to_contain_text("5 / 5")

    page.goto(f"{base}/admin/annotation/campaign/")
    page.locator("#content-main").get_by_role("link", name="Evaluation sets").click()
    page.get_by_role("link", name=f"{SET_NAME} v1", exact=True).click()
    expect(page.locator("#responders")).to_contain_text(first.name)
    expect(page.locator("#responders")).to_contain_text(finetune.name)
    page.get_by_role("button", name="Start human baseline").click()
    expect(page.get_by_text("5 context(s) added to write")).to_be_visible()
    page.get_by_label("Response A from").select_option(finetune.name)
    page.get_by_label("Response B from").select_option(first.name)
    page.get_by_role("button", name="Compare two versions").click()
    expect(page.get_by_text("5 pair(s) added to compare")).to_be_visible()

    # A crowdworker writes the human baseline; the raters rate and compare, blind.
    page.context.clear_cookies()
    log_in(page, base, writer.username, DEFAULT_PASSWORD)
    assert _write_in_browser(page, base, writer) == len(plan.CONTEXTS)

    page.context.clear_cookies()
    log_in(page, base, raters[0].username, DEFAULT_PASSWORD)
    for kind in plan.RATINGS:
        rated = _rate_in_browser(page, base, raters[0], kind, aliases)
        assert rated == len(plan.RATINGS[kind]), kind
    assert _compare_in_browser(page, base, raters[0]) == len(plan.PAIRWISE)
    for rater in range(1, 5):
        # Closed when done: a kept-alive socket would hold a live server thread and its database
        # session past the test.
        with _api_client(base, raters[rater]) as client:
            for kind in (*plan.RATINGS, "pairwise"):
                if rater < RATERS[kind]:
                    done = _work_over_api(client, base, kind, rater, aliases)
                    assert done == len(plan.PAIRWISE if kind == "pairwise" else plan.RATINGS[kind]), kind

    # The worker's consensus labels every complete item.
    _wait_for(
        lambda: (
            len(selectors.evaluation_labels(evaluation_set=evaluation_set)) == 3 * len(plan.CONTEXTS)
            and len(selectors.pairwise_outcomes(evaluation_set=evaluation_set)) == len(plan.PAIRWISE)
        ),
        "the consensus labels",
    )

    # The researcher reads the report, from the fine-tune's page.
    page.context.clear_cookies()
    log_in(page, base, researcher.username, DEFAULT_PASSWORD)
    page.goto(f"{base}/admin/trainer/modelversion/{finetune.pk}/change/")
    page.locator("#evaluations").get_by_role("link", name=f"report of {SET_NAME} v1").click()
    expect(page.get_by_role("heading", name="Human metrics", exact=True)).to_be_visible()
    _check_report_page(page, names, expected)

    # The same figures over the API, as JSON and as CSV, with the researcher's session.
    api = f"{base}/api/v1/evaluation-sets/{evaluation_set.pk}/report"
    answer = page.request.get(api)
    assert answer.status == 200, answer.text()
    _check_report_json(answer.json(), names, expected)
    answer = page.request.get(f"{api}?format=csv")
    assert answer.status == 200, answer.text()
    _check_report_csv(answer.text(), names, expected)
