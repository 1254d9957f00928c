"""The evaluation report from the database: the loader (``trainer.evaluation_report_loader``), the
page (``/admin/trainer/evaluation-sets/{id}/report/``, admins and researchers), the API
(``GET /api/v1/evaluation-sets/{id}/report``, JSON and CSV) and the links to it from a model
version's page and an evaluation set's page.

Rows the report only reads are made here: an evaluation set (imported), model versions with their
``Evaluation`` rows, and answers through ``evaluation_response_add``. The consensus labels and
side-by-side outcomes of the answers come, in the product, from ``annotation.selectors``
(``evaluation_labels`` and ``pairwise_outcomes``, tested in tests/annotation/test_evaluations.py);
here they are given to the loader by hand (its ``labels``/``outcomes`` arguments), and the page is
rendered from that report. Requests for a set whose answers are stored call those selectors."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dialogs.evaluation_responses import evaluation_response_add
from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from dialogs.models import HUMAN_RESPONDER, EvaluationSet
from groundwork.roles import Role
from tests.factories import UserFactory
from trainer.evaluation_report import METRIC_KEYS, response_values
from trainer.evaluation_report_loader import evaluation_set_report, report_inputs
from trainer.models import Evaluation, ModelVersion, TrainingJob
from trainer.views import report_page_context

pytestmark = pytest.mark.django_db

CONTEXTS = 6
SSI_YES = {"sensible": 1, "specific": 1, "interesting": 0, "safety": 1}
SSI_NO = {"sensible": 0, "specific": 0, "interesting": 0, "safety": 0}


def metrics(sensible: float, loss: float) -> dict[str, Any]:
    return {
        "discriminators": {"SENSIBLE": sensible, "SPECIFIC": 0.25, "INTERESTING": 0.125, "UNSAFE": 0.0625},
        "hits_at_1": 0.35,
        "hits_candidates": 20,
        "hits_contexts": CONTEXTS,
        "validation_loss": loss,
        "contexts_per_second": 3.5,
        "fallbacks": 2,
    }


def page_url(evaluation_set: EvaluationSet) -> str:
    return reverse("evaluation-report", args=[evaluation_set.pk])


def api_url(evaluation_set: EvaluationSet) -> str:
    return reverse("api:evaluation-set-report", kwargs={"pk": evaluation_set.pk})


@pytest.fixture
def evaluated() -> dict[str, Any]:
    """A set of 6 contexts, and two versions evaluated on it (a fine-tune of the first), nothing
    answered yet."""
    objects = [
        {"id": f"c{i}", "purpose": "quality", "context": [{"speaker": "user", "text": f"Question {i}?"}]}
        for i in range(CONTEXTS)
    ]
    evaluation_set = evaluation_set_import(name="mtb", records=parse_objects(objects)).evaluation_set
    first = ModelVersion.objects.create(name="gw-1", directory="models/1", tokenizer_sha256="t" * 64)
    job = TrainingJob.objects.create(kind=TrainingJob.Kind.FINETUNE_QUALITY_SAFETY, base_model=first)
    tuned = ModelVersion.objects.create(
        name="gw-2", directory="models/2", tokenizer_sha256="t" * 64, parent=first, job=job
    )
    evaluations = {
        version.name: Evaluation.objects.create(
            evaluation_set=evaluation_set,
            model_version=version,
            status=Evaluation.Status.DONE,
            done=CONTEXTS,
            total=CONTEXTS,
            metrics=metrics(sensible, loss),
        )
        for version, sensible, loss in ((first, 0.5, 4.25), (tuned, 0.75, 3.5))
    }
    return {"set": evaluation_set, "first": first, "tuned": tuned, "evaluations": evaluations}


@pytest.fixture
def answered(evaluated: dict[str, Any]) -> dict[str, Any]:
    """Every context answered by both versions and a crowdworker, with consensus labels by hand:
    gw-1 sensible on 2 of 6, gw-2 on 6 of 6, the human on 5 of 6; gw-2 preferred side by side on
    5 contexts, one tie."""
    writer = UserFactory(role=Role.CROWDWORKER)
    contexts = list(evaluated["set"].contexts.order_by("index"))
    sensible = {"gw-1": 2, "gw-2": 6, HUMAN_RESPONDER: 5}
    labels: dict[int, dict[str, int]] = {}
    for responder, share in sensible.items():
        for i, context in enumerate(contexts):
            response = evaluation_response_add(
                context=context,
                responder=responder,
                text=f"{responder} says {i}",
                written_by=writer if responder == HUMAN_RESPONDER else None,
            )
            labels[response.pk] = SSI_YES if i < share else SSI_NO
    outcomes = [("gw-2", "gw-1", c.pk, "a") for c in contexts[:5]] + [("gw-1", "gw-2", contexts[5].pk, "tie")]
    return {**evaluated, "contexts": contexts, "labels": labels, "outcomes": outcomes}


def login(client: Any, role: Role) -> Any:
    user = UserFactory(role=role)
    client.force_login(user)
    return user


# --- the loader ----------------------------------------------------------------------------------------


def test_the_loader_reads_contexts_answers_labels_and_evaluations(answered: dict[str, Any]) -> None:
    inputs = report_inputs(answered["set"], labels=answered["labels"], outcomes=answered["outcomes"])

    assert inputs.contexts == tuple(c.pk for c in answered["contexts"])  # the set's order
    assert inputs.responders == ["gw-1", "gw-2", HUMAN_RESPONDER]  # oldest version first, human last
    assert inputs.responses == 3 * CONTEXTS
    first = answered["contexts"][0].pk
    assert inputs.values["gw-1"][first] == response_values(SSI_YES)
    assert inputs.automatic["gw-2"]["discriminators"]["SENSIBLE"] == 0.75
    assert inputs.evaluations["gw-2"].model_version == answered["tuned"]


def test_an_answer_without_labels_is_stored_but_not_rated(answered: dict[str, Any]) -> None:
    unrated = {pk: labels for pk, labels in answered["labels"].items() if pk % 2}

    report, inputs = evaluation_set_report(answered["set"], labels=unrated, outcomes=[])

    assert inputs.responses == 3 * CONTEXTS
    assert sum(row.rated for row in report.rows) == len(unrated)


def test_the_report_of_the_database_rows_gives_the_rules_numbers(answered: dict[str, Any]) -> None:
    labels, outcomes = answered["labels"], answered["outcomes"]
    report, _ = evaluation_set_report(answered["set"], labels=labels, outcomes=outcomes)

    rows = {row.responder: row for row in report.rows}
    assert rows["gw-1"].cells["sensibleness"].estimate == pytest.approx(2 / 6)
    assert rows["gw-2"].cells["sensibleness"].estimate == 1
    assert (rows["gw-2"].cells["sensibleness"].low, rows["gw-2"].cells["sensibleness"].high) == (1, 1)
    assert rows[HUMAN_RESPONDER].cells["ssi"].estimate == pytest.approx(5 / 6 * 2 / 3)
    (comparison,) = report.comparisons  # the two latest versions, the newer first
    assert (comparison.a, comparison.b) == ("gw-2", "gw-1")
    assert comparison.differences["sensibleness"].estimate == pytest.approx(4 / 6)
    assert comparison.differences["sensibleness"].excludes_zero
    assert (comparison.win_rate.wins, comparison.win_rate.ties, comparison.win_rate.losses) == (5, 1, 0)


# --- the page --------------------------------------------------------------------------------------------


def render_report(answered: dict[str, Any], user: Any, query: str = "") -> str:
    """The page as the view renders it, from a report made of the hand-made labels."""
    request = RequestFactory().get(page_url(answered["set"]) + query)
    request.user = user
    report, inputs = evaluation_set_report(
        answered["set"], params=request.GET, labels=answered["labels"], outcomes=answered["outcomes"]
    )
    context = {**admin.site.each_context(request), **report_page_context(report, inputs, answered["set"])}
    return render_to_string("admin/trainer/evaluation_report.html", context, request=request)


def test_the_page_shows_chart_metrics_intervals_comparison_win_rates_and_automatic_metrics(
    answered: dict[str, Any],
) -> None:
    html = render_report(answered, UserFactory(role=Role.RESEARCHER))

    assert '<svg class="report-chart"' in html
    assert html.count('<g class="bar">') == 3 * 5  # SSI's four metrics and safety, for 3 responders
    for metric in ("Sensibleness", "Specificity", "Interestingness", "SSI", "Safety", "Groundedness"):
        assert f">{metric}</th>" in html
    assert "<strong>0.333</strong>" in html  # gw-1's sensibleness, 2 of 6
    assert "n = 6" in html
    lineage = reverse("admin:trainer_modelversion_change", args=[answered["tuned"].pk]) + "#lineage"
    assert f'<a href="{lineage}"' in html
    assert "Done (6/6)" in html
    assert '<option value="gw-2" selected>' in html
    assert "gw-2 − gw-1" in html
    assert "+0.667" in html  # the paired difference in sensibleness
    assert '<strong class="differs">differs</strong>' in html
    assert "5 won · 1 tied · 0 lost" in html
    assert "0.750" in html  # gw-2's P(SENSIBLE)
    assert "4.2500" in html  # gw-1's validation loss
    assert "needs ≥ 3 versions" in html
    assert reverse("api:evaluation-set-report", kwargs={"pk": answered["set"].pk}) + "?format=csv" in html


def test_the_pair_selector_compares_the_chosen_responders(answered: dict[str, Any]) -> None:
    html = render_report(answered, UserFactory(role=Role.ADMIN), f"?a={HUMAN_RESPONDER}&b=gw-1")

    assert f'<option value="{HUMAN_RESPONDER}" selected>' in html
    assert f"{HUMAN_RESPONDER} − gw-1" in html
    assert "+0.500" in html  # 5 of 6 against 2 of 6
    assert "not compared side by side" in html


@pytest.mark.parametrize("role", [Role.ADMIN, Role.RESEARCHER])
def test_admins_and_researchers_read_the_page_of_an_evaluated_set(
    client: Any, evaluated: dict[str, Any], role: Role
) -> None:
    login(client, role)

    response = client.get(page_url(evaluated["set"]) + "?a=gw-1&b=gw-2")

    assert response.status_code == 200
    html = response.content.decode()
    assert "gw-1 − gw-2" in html
    assert '<svg class="report-chart"' in html
    assert "4.2500" in html  # the automatic metrics are there before any rating
    assert reverse("admin:trainer_modelversion_change", args=[evaluated["first"].pk]) + "#lineage" in html


def test_crowdworkers_may_not_read_the_page_and_anonymous_users_log_in(
    client: Any, evaluated: dict[str, Any]
) -> None:
    response = client.get(page_url(evaluated["set"]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))

    login(client, Role.CROWDWORKER)
    assert client.get(page_url(evaluated["set"])).status_code == 403


def test_a_pair_with_one_responder_or_an_unknown_one_is_refused(client: Any, evaluated: dict[str, Any]):
    login(client, Role.RESEARCHER)

    assert client.get(page_url(evaluated["set"]) + "?a=gw-1").status_code == 400
    assert client.get(page_url(evaluated["set"]) + "?a=gw-1&b=gw-9").status_code == 400
    assert client.get(reverse("evaluation-report", args=[10**9])).status_code == 404


def test_a_set_nobody_evaluated_says_so(client: Any) -> None:
    objects = [{"id": "c0", "purpose": "quality", "context": [{"speaker": "user", "text": "Hi"}]}]
    evaluation_set = evaluation_set_import(name="empty", records=parse_objects(objects)).evaluation_set
    login(client, Role.ADMIN)

    html = client.get(page_url(evaluation_set)).content.decode()

    assert "No model version has been evaluated on this set yet" in html


def test_the_model_version_page_links_to_the_reports_of_its_evaluations(
    client: Any, evaluated: dict[str, Any]
) -> None:
    login(client, Role.ADMIN)

    url = reverse("admin:trainer_modelversion_change", args=[evaluated["tuned"].pk])
    html = client.get(url).content.decode()

    assert 'id="evaluations"' in html
    assert f'<a href="{page_url(evaluated["set"])}">report of mtb v1</a>' in html
    assert "6 / 6" in html


def test_the_evaluation_set_page_links_to_its_report(client: Any, evaluated: dict[str, Any]) -> None:
    login(client, Role.RESEARCHER)

    url = reverse("admin:dialogs_evaluationset_change", args=[evaluated["set"].pk])
    html = client.get(url).content.decode()

    assert page_url(evaluated["set"]) in html


# --- the API ---------------------------------------------------------------------------------------------


def test_the_api_gives_the_report_as_json_with_each_versions_lineage(
    api_client: Any, evaluated: dict[str, Any]
) -> None:
    login(api_client, Role.RESEARCHER)

    body = api_client.get(api_url(evaluated["set"])).json()

    expected = {"id": evaluated["set"].pk, "name": "mtb", "version": 1, "context_count": 6}
    assert body["evaluation_set"] == expected
    assert [row["responder"] for row in body["rows"]] == ["gw-1", "gw-2"]
    row = body["rows"][1]
    assert row["metrics"] == dict.fromkeys(METRIC_KEYS)  # nothing rated yet
    assert row["automatic"]["discriminators"]["SENSIBLE"] == 0.75
    assert row["evaluation"]["status"] == "done"
    assert row["model_version"]["url"].endswith(
        reverse("api:model-version-detail", kwargs={"pk": evaluated["tuned"].pk})
    )
    assert (body["comparisons"][0]["a"], body["comparisons"][0]["b"]) == ("gw-2", "gw-1")
    assert body["resamples"] == 2000
    assert body["page"].endswith(page_url(evaluated["set"]))


def test_the_api_gives_csv_with_one_row_per_responder_and_metric(api_client: Any, evaluated: dict[str, Any]):
    login(api_client, Role.ADMIN)

    response = api_client.get(api_url(evaluated["set"]) + "?format=csv")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["responder", "metric", "value", "low", "high", "n"]
    assert len(rows) == 1 + 2 * len(METRIC_KEYS)
    assert rows[1] == ["gw-1", "sensibleness", "", "", "", "0"]


def test_the_api_refuses_crowdworkers_and_bad_parameters(api_client: Any, evaluated: dict[str, Any]) -> None:
    assert api_client.get(api_url(evaluated["set"])).status_code == 401
    login(api_client, Role.CROWDWORKER)
    assert api_client.get(api_url(evaluated["set"])).status_code == 403

    login(api_client, Role.RESEARCHER)
    bad_format = api_client.get(api_url(evaluated["set"]) + "?format=xml")
    assert bad_format.status_code == 400
    assert "format" in bad_format.json()
    assert api_client.get(api_url(evaluated["set"]) + "?a=gw-1&b=nobody").json() == {
        "b": ["expected one of gw-1, gw-2, got 'nobody'"]
    }
    every = api_client.get(api_url(evaluated["set"]) + "?pairs=all").json()
    assert [(c["a"], c["b"]) for c in every["comparisons"]] == [("gw-2", "gw-1")]


# --- with the selectors of annotation (after the crowdeval branch is merged) -------------------------------


def test_the_page_and_api_of_a_set_answered_but_not_yet_rated(client: Any, answered: dict[str, Any]) -> None:
    login(client, Role.RESEARCHER)

    page = client.get(page_url(answered["set"]))
    body = client.get(api_url(answered["set"])).json()

    assert page.status_code == 200
    assert [row["responder"] for row in body["rows"]] == ["gw-1", "gw-2", HUMAN_RESPONDER]
    assert body["responses"] == 3 * CONTEXTS
    assert all(row["rated"] == 0 for row in body["rows"])


def test_the_page_costs_the_same_queries_however_many_versions_were_evaluated(
    client: Any, evaluated: dict[str, Any]
) -> None:
    login(client, Role.RESEARCHER)
    with CaptureQueriesContext(connection) as two:
        assert client.get(page_url(evaluated["set"])).status_code == 200
    for i in range(3, 8):
        version = ModelVersion.objects.create(name=f"gw-{i}", directory="models", tokenizer_sha256="t" * 64)
        Evaluation.objects.create(
            evaluation_set=evaluated["set"], model_version=version, metrics=metrics(0.5, i)
        )

    with CaptureQueriesContext(connection) as seven:
        html = client.get(page_url(evaluated["set"])).content.decode()

    assert html.count('<g class="legend">') == 7
    assert len(seven.captured_queries) == len(two.captured_queries)
