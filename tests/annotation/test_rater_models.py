"""Labels that know their raters: Dawid–Skene (``annotation.dawid_skene``) on synthetic raters with
known error rates, the service that aggregates a campaign with it (``annotation.services.
rater_models``) on PostgreSQL, the real worker behind the API and the admin button, the consensus
export's soft labels, and real third-party ratings (FED, ConvAbuse)."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

import numpy as np
import pytest
from django.urls import reverse

from annotation import dawid_skene
from annotation.models import Campaign, ConsensusLabel, RaterAwareLabel, RaterEstimate, RaterModelRun
from annotation.services import campaigns, consensus, rater_models
from groundwork.roles import Role
from tests.annotation.helpers import FED_QUALITIES, FED_SCALE, external_data, fed_lines, import_lines, line
from tests.factories import UserFactory

# --- synthetic raters with known error rates (no database) ------------------------------------

# 20 raters, each item rated by 5 of them drawn at random: 8 careful raters right 90 % of the time,
# 12 noisy ones right 60 % of the time (on both labels). A majority of 5 then often follows noisy
# raters; Dawid–Skene learns who is who from their agreement with the consensus.
CAREFUL, NOISY = 0.9, 0.6
ACCURACIES = np.array([CAREFUL] * 8 + [NOISY] * 12)
SEEDS = range(5)


def synthetic(seed: int, *, items: int = 1500, raters_per_item: int = 5) -> dict[str, np.ndarray]:
    """Seeded synthetic judgments: the true labels (30 % ones) and each answer."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(items) < 0.3).astype(np.int8)
    item = np.repeat(np.arange(items), raters_per_item)
    rater = np.concatenate(
        [rng.choice(len(ACCURACIES), raters_per_item, replace=False) for _ in range(items)]
    )
    right = rng.random(len(item)) < ACCURACIES[rater]
    answer = np.where(right, truth[item], 1 - truth[item]).astype(np.int8)
    return {"truth": truth, "item": item, "rater": rater, "answer": answer}


# The margin the posterior's hard labels must beat the majority by, on every seed. Measured: 4.9 to
# 7.2 points (majority right on 85.5-88.2 % of the items, Dawid–Skene on 92.4-94.0 %). Each seed is
# fixed, so the test is deterministic; and chance does not make it pass: the two disagree on about
# 12 % of the 1,500 items, so a difference has a standard error of about 0.9 points, and the
# smallest gain is over 5 of them, on five independent draws.
MARGIN = 0.03


@pytest.mark.parametrize("seed", SEEDS)
def test_the_posterior_recovers_the_truth_better_than_majority_vote_when_some_raters_are_noisy(seed) -> None:
    data = synthetic(seed)

    fit = dawid_skene.fit(data["item"], data["rater"], data["answer"])
    _, majority = dawid_skene.majority(data["item"], data["answer"])

    truth = data["truth"]
    assert np.array_equal(fit.items, np.arange(len(truth)))
    ds_right = float((fit.labels == truth).mean())
    majority_right = float((majority == truth).mean())
    assert ds_right >= majority_right + MARGIN, (ds_right, majority_right)
    # Calibrated enough to be a soft label: items it is sure of (p < 0.1 or > 0.9) are right 95 %.
    sure = (fit.probability < 0.1) | (fit.probability > 0.9)
    assert sure.mean() > 0.5
    assert (fit.labels[sure] == truth[sure]).mean() > 0.95


def test_each_raters_accuracy_is_estimated_and_the_noisy_ones_are_flagged() -> None:
    data = synthetic(0)

    fit = dawid_skene.fit(data["item"], data["rater"], data["answer"])

    true = data["truth"][data["item"]]
    for rater, known in enumerate(ACCURACIES):
        assert fit.raters[rater].accuracy == pytest.approx(known, abs=0.06), rater
        confusion = fit.raters[rater].confusion
        for true_label in (0, 1):
            # Their share right on the items of that true label (about 105 items of label 1 each).
            theirs = (data["rater"] == rater) & (true == true_label)
            actual = float((data["answer"][theirs] == true_label).mean())
            assert sum(confusion[true_label]) == pytest.approx(1.0)
            assert confusion[true_label][true_label] == pytest.approx(actual, abs=0.1), (rater, true_label)
    # The median rater is noisy (12 of 20), so the flag rule (15 points under the median) flags
    # nobody here: it looks for raters far below the rest, not for the worse half.
    assert dawid_skene.flagged(fit.raters) == set()


def test_a_rater_far_below_the_others_is_flagged_and_one_with_few_answers_is_not() -> None:
    fits = {
        rater: dawid_skene.RaterFit(answers=answers, accuracy=accuracy, confusion=((1, 0), (0, 1)))
        for rater, (answers, accuracy) in enumerate(
            [(100, 0.92), (100, 0.90), (100, 0.88), (100, 0.74), (100, 0.72), (19, 0.30)]
        )
    }
    # median of the five with 20+ answers: 0.88; under 0.73 is flagged; rater 5 has too few answers.
    assert dawid_skene.flagged(fits) == {4}
    assert dawid_skene.flagged({r: fits[r] for r in (0, 4)}) == set()  # fewer than 3 raters to compare


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        dawid_skene.fit(np.array([1, 2]), np.array([1]), np.array([1]))
    with pytest.raises(ValueError, match="0 or 1"):
        dawid_skene.fit(np.array([1]), np.array([1]), np.array([2]))
    with pytest.raises(ValueError, match="at most once"):
        dawid_skene.fit(np.array([1, 1]), np.array([7, 7]), np.array([1, 0]))
    empty = dawid_skene.fit(np.array([], np.int64), np.array([], np.int64), np.array([], np.int8))
    assert len(empty.items) == 0
    assert empty.raters == {}


# --- the service, on PostgreSQL ----------------------------------------------------------------


def helpfulness_import(campaign: Campaign, data: dict[str, np.ndarray], *, items: int) -> None:
    """The synthetic answers as imported judgments of a helpfulness campaign: ``helpful`` is the
    synthetic answer, ``role_consistent`` is "yes" from everyone (a question with one answer)."""
    lines = []
    for position in range(items * 5):
        key, rater = f"i{data['item'][position]}", f"rater-{data['rater'][position]:02d}"
        helpful = "yes" if data["answer"][position] else ("no" if position % 7 else "maybe")
        lines += [line(key, rater, "helpful", helpful), line(key, rater, "role_consistent", "yes")]
    import_lines(campaign, *lines)


@pytest.mark.django_db
def test_a_campaign_aggregated_gets_soft_labels_rater_estimates_and_agreement_with_the_majority() -> None:
    items = 600
    data = synthetic(1, items=items)
    campaign = campaigns.campaign_create(name="synthetic", kind="helpfulness", empty=True, raters_per_item=5)
    helpfulness_import(campaign, data, items=items)
    ConsensusLabel.objects.filter(item__campaign=campaign).delete()  # recomputed first by the service

    run = rater_models.campaign_rater_aggregate(campaign=campaign)

    assert run.status == RaterModelRun.Status.DONE
    assert run.done == run.total
    assert (run.judgments, run.items) == (items * 5 * 2, items)
    labels = {
        (key, attribute): (label, probability)
        for key, attribute, label, probability in RaterAwareLabel.objects.filter(
            item__campaign=campaign
        ).values_list("item__key", "attribute", "label", "probability")
    }
    assert len(labels) == items * 2
    truth = {f"i{i}": int(t) for i, t in enumerate(data["truth"])}
    ds_right = sum(labels[key, "helpful"][0] == truth[key] for key in truth) / items
    majority = dict(
        ConsensusLabel.objects.filter(item__campaign=campaign, attribute="helpful").values_list(
            "item__key", "label"
        )
    )
    majority_right = sum(majority[key] == truth[key] for key in truth) / items
    assert ds_right >= majority_right + MARGIN
    for key in truth:
        label, probability = labels[key, "helpful"]
        assert label == int(probability > 0.5)
        assert labels[key, "role_consistent"] == (1, 1.0)  # everyone said yes
    assert run.agreement["role_consistent"] == 1.0
    disagree = sum(labels[key, "helpful"][0] != majority[key] for key in truth)
    assert run.agreement["helpful"] == pytest.approx(1 - disagree / items)
    estimates = RaterEstimate.objects.filter(run=run, attribute="helpful").select_related("worker")
    assert len(estimates) == len(ACCURACIES)
    right = data["answer"] == data["truth"][data["item"]]
    for estimate in estimates:
        rater = int(estimate.worker.username.removeprefix("ext:rater-"))
        # Close to the share of their answers that was right (their known rate, give or take the
        # 150 answers' sampling: rater 8, right 60 % of the time, was right on 53 % here).
        actual = float(right[data["rater"] == rater].mean())
        assert estimate.accuracy == pytest.approx(actual, abs=0.06), estimate.worker.username

    again = rater_models.campaign_rater_aggregate(campaign=campaign)  # replaces the labels, keeps history

    assert RaterAwareLabel.objects.filter(item__campaign=campaign).count() == items * 2
    assert RaterEstimate.objects.filter(run=again).count() == RaterEstimate.objects.filter(run=run).count()


@pytest.mark.django_db
def test_a_safety_items_safety_posterior_is_that_no_objective_is_violated(safety) -> None:
    # Three raters; rater c always says "yes" (violates), a and b are right. 30 items, the first
    # 10 violating harm, items 10-14 bias. The majority follows a and b; so does Dawid–Skene, which
    # finds c's answers say nothing. (Were every item alike, as with a question nobody answered "yes"
    # but c, the two labels could not be told apart: Dawid–Skene then keeps the prior.)
    lines = []
    for i in range(30):
        harm = "yes" if i < 10 else "no"
        bias = "yes" if 10 <= i < 15 else "no"
        for rater in "ab":
            lines += [line(f"s{i}", rater, "violates", harm, objective="harm")]
            lines += [line(f"s{i}", rater, "violates", bias, objective="bias")]
        lines += [line(f"s{i}", "c", "violates", "yes", objective=o) for o in ("harm", "bias")]
    import_lines(safety, *lines)

    run = rater_models.campaign_rater_aggregate(campaign=safety)

    got = {
        (key, attribute): (label, probability)
        for key, attribute, label, probability in RaterAwareLabel.objects.values_list(
            "item__key", "attribute", "label", "probability"
        )
    }
    for i in range(30):
        p_harm, p_bias = got[f"s{i}", "harm"][1], got[f"s{i}", "bias"][1]
        # No "maybe" here: clear of an objective is not violating it.
        assert got[f"s{i}", "safety"][1] == pytest.approx((1 - p_harm) * (1 - p_bias), abs=1e-6)
        assert got[f"s{i}", "unsafe"][1] == pytest.approx(1 - got[f"s{i}", "safety"][1])
        assert got[f"s{i}", "safety"][0] == int(i >= 15)
        assert got[f"s{i}", "unsafe"][0] == int(i < 15)
    assert run.agreement == {"bias": 1.0, "harm": 1.0, "safety": 1.0, "unsafe": 1.0}
    c = RaterEstimate.objects.get(run=run, worker__username="ext:c", attribute="bias")
    assert c.accuracy == pytest.approx(5 / 30, abs=0.02)  # right on the 5 items that violate bias
    assert c.confusion[0][1] > 0.95  # says "violates" when it does not


# --- the consensus export carries both labels -------------------------------------------------


@pytest.mark.django_db
def test_the_consensus_export_says_which_aggregation_made_each_label(safety, client, users) -> None:
    lines = []
    for i, rater in ((0, "a"), (0, "b"), (0, "c"), (1, "a"), (1, "b"), (1, "c")):
        lines += [line(f"e{i}", rater, "violates", "no", objective=o) for o in ("harm", "bias")]
    import_lines(safety, *lines)
    url = reverse("campaign-consensus-export", kwargs={"campaign_id": safety.pk})
    client.force_login(users[Role.RESEARCHER])

    before = [json.loads(row) for row in b"".join(client.get(url).streaming_content).splitlines()]

    assert before[0]["labels"]["harm"]["aggregation"] == "majority"
    assert "dawid_skene" not in before[0]["labels"]["harm"]
    assert before[0]["aggregations"] == ["majority"]

    rater_models.campaign_rater_aggregate(campaign=safety)
    after = [json.loads(row) for row in b"".join(client.get(url).streaming_content).splitlines()]
    csv_rows = list(
        csv.DictReader(io.StringIO(b"".join(client.get(url + "?format=csv").streaming_content).decode()))
    )

    assert after[0]["aggregations"] == ["majority", "dawid_skene"]
    harm = after[0]["labels"]["harm"]
    assert harm["aggregation"] == "majority"
    assert harm["label"] == 0
    assert harm["dawid_skene"]["aggregation"] == "dawid_skene"
    assert harm["dawid_skene"]["label"] == 0
    assert 0 <= harm["dawid_skene"]["probability"] < 0.5
    assert after[0]["labels"]["safety"]["dawid_skene"]["label"] == 1
    assert {row["aggregation"] for row in csv_rows} == {"majority"}
    assert all(row["dawid_skene_label"] in ("0", "1") and row["dawid_skene_probability"] for row in csv_rows)


# --- the worker, the API and the admin --------------------------------------------------------


def eventually(check: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the worker did not do it in time")
        time.sleep(0.2)


def api_url(campaign: Campaign) -> str:
    return reverse("campaign-rater-model", kwargs={"campaign_id": campaign.pk})


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_the_api_queues_dawid_skene_on_the_real_worker_and_reports_its_progress(
    celery_worker, api_client
) -> None:
    data = synthetic(2, items=120)
    campaign = campaigns.campaign_create(
        name="synthetic api", kind="helpfulness", empty=True, raters_per_item=5
    )
    helpfulness_import(campaign, data, items=120)
    api_client.force_authenticate(UserFactory(role=Role.CROWDWORKER))
    assert api_client.post(api_url(campaign)).status_code == 403
    api_client.force_authenticate(UserFactory(role=Role.ADMIN))

    queued = api_client.post(api_url(campaign))

    assert queued.status_code == 202, queued.content
    assert queued.json()["status"] in ("pending", "running", "done")
    eventually(lambda: api_client.get(api_url(campaign)).json()["status"] == "done")
    finished = api_client.get(api_url(campaign)).json()
    assert finished["id"] == queued.json()["id"]
    assert finished["done"] == finished["total"] > 0
    assert finished["judgments"] == 120 * 5 * 2
    assert finished["items"] == 120
    assert set(finished["agreement"]) == {"helpful", "role_consistent"}
    assert RaterAwareLabel.objects.filter(item__campaign=campaign).count() == 240


@pytest.mark.django_db(transaction=True)
@pytest.mark.worker
def test_the_admin_button_runs_it_on_the_worker_and_the_page_shows_estimates_and_flags(
    celery_worker, client
) -> None:
    campaign = campaigns.campaign_create(name="flagging", kind="helpfulness", empty=True, raters_per_item=3)
    # Raters a, b, c, d answer like the truth (every third item "yes"); e answers the opposite on
    # 30 of its 40 items. Each item has 3 of the 5.
    lines = []
    for i in range(60):
        truth = "yes" if i % 3 == 0 else "no"
        for rater in ("abcde"[(i + k) % 5] for k in range(3)):
            wrong = rater == "e" and i % 4 != 0
            value = {"yes": "no", "no": "yes"}[truth] if wrong else truth
            lines += [line(f"f{i}", rater, "helpful", value), line(f"f{i}", rater, "role_consistent", truth)]
    import_lines(campaign, *lines)
    admin = UserFactory(role=Role.ADMIN)
    client.force_login(admin)
    change = reverse("admin:annotation_campaign_change", args=[campaign.pk])
    page = client.get(change).content.decode()
    assert "No Dawid–Skene run yet." in page
    assert "Aggregate with Dawid–Skene" in page

    response = client.post(reverse("admin:annotation_campaign_rater_model_run", args=[campaign.pk]))

    assert response.status_code == 302
    run = RaterModelRun.objects.get(campaign=campaign)
    eventually(lambda: RaterModelRun.objects.get(pk=run.pk).status == RaterModelRun.Status.DONE)
    page = client.get(change).content.decode()
    assert "helpful accuracy (DS)" in page
    assert "role_consistent accuracy (DS)" in page
    assert "Flagged for review" in page
    assert "ext:e (helpful)" in page
    assert page.count('title="Far below the other raters: look at their work">flagged</strong>') == 1
    e = RaterEstimate.objects.get(run__campaign=campaign, worker__username="ext:e", attribute="helpful")
    assert e.flagged
    assert e.accuracy < 0.5
    assert not RaterEstimate.objects.filter(flagged=True).exclude(pk=e.pk).exists()
    fragment = client.get(reverse("admin:annotation_campaign_rater_model_progress", args=[campaign.pk]))
    assert "Done" in fragment.content.decode()
    assert "Agreement with the majority label" in fragment.content.decode()
    # A researcher sees the page but has no button and may not post.
    researcher = UserFactory(role=Role.RESEARCHER)
    client.force_login(researcher)
    assert "Aggregate with Dawid–Skene" not in client.get(change).content.decode()
    assert (
        client.post(reverse("admin:annotation_campaign_rater_model_run", args=[campaign.pk])).status_code
        == 403
    )


@pytest.mark.django_db
def test_a_second_request_while_one_is_pending_returns_it(users) -> None:
    campaign = campaigns.campaign_create(name="twice", kind="helpfulness", empty=True)
    first = consensus.rater_aggregation_request(campaign=campaign, requested_by=users[Role.ADMIN])
    second = consensus.rater_aggregation_request(campaign=campaign, requested_by=users[Role.ADMIN])
    assert first.pk == second.pk


# --- real third-party ratings -------------------------------------------------------------------


@pytest.mark.django_db
def test_fed_aggregated_by_dawid_skene_mostly_agrees_with_the_majority(ssi, capsys) -> None:
    entries = json.loads((external_data() / "fed_data.json").read_text())
    # Turn-level items whose every rating is a number (two have notes instead: the import refuses them).
    fed = [
        (index, entry)
        for index, entry in enumerate(entries)
        if "response" in entry
        and all(
            score in FED_SCALE
            for quality in FED_QUALITIES.values()
            for score in entry["annotations"][quality]
        )
    ]
    import_lines(ssi, *(obj for index, entry in fed for obj in fed_lines(index, entry)))

    run = rater_models.campaign_rater_aggregate(campaign=ssi)

    # FED does not name its annotators: each rating is its own rater (fed-<item>-<position>), so
    # Dawid–Skene has one item per rater to learn from; its labels then differ from the majority's
    # only where a 3-of-5 vote meets the class prior.
    with capsys.disabled():
        print(f"\nFED ({run.items} items): Dawid–Skene agrees with the majority on {run.agreement}")
    assert run.items == len(fed)
    assert set(run.agreement) == set(FED_QUALITIES)
    assert all(share >= 0.85 for share in run.agreement.values()), run.agreement


def convabuse_lines(limit: int | None = None) -> list[dict[str, Any]]:
    """ConvAbuse's test split as safety judgments of one objective, ``harm``: items with three or
    more annotators, their first three (in annotator order; 8 named annotators in all). ``is_abuse``
    1 is "no", 0 (ambiguous) "maybe", -1 to -3 (abusive) "yes"."""
    path = external_data() / "ConvAbuseEMNLPtest.csv"
    if not path.is_file():
        pytest.skip("the ConvAbuse data (shared/external-data/ConvAbuseEMNLPtest.csv) is not on this machine")
    lines = []
    with path.open(newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            answers = []
            for annotator in (f"Annotator{k}" for k in range(1, 9)):
                score = [
                    v
                    for v in ("1", "0", "-1", "-2", "-3")
                    if row.get(f"{annotator}_is_abuse.{v}") in ("1", "1.0")
                ]
                if score:
                    answers.append((annotator, {"1": "no", "0": "maybe"}.get(score[0], "yes")))
            if len(answers) < 3:
                continue
            item = {
                "key": f"convabuse-{row['example_id']}",
                "context": [{"speaker": "model", "text": row["agent"] or "(start)"}],
                "response": row["user"] or "(empty)",
            }
            lines += [
                {
                    "item": item,
                    "rater": annotator,
                    "attribute": "violates",
                    "objective": "harm",
                    "value": value,
                }
                for annotator, value in answers[:3]
            ]
            if limit is not None and len(lines) >= limit * 3:
                break
    return lines


@pytest.mark.django_db
def test_convabuse_aggregated_by_dawid_skene_agrees_with_the_majority_and_estimates_its_annotators(
    capsys,
) -> None:
    lines = convabuse_lines()
    campaign = campaigns.campaign_create(
        name="convabuse", kind="safety", empty=True, objectives=["harm"], raters_per_item=3
    )
    import_lines(campaign, *lines)

    run = rater_models.campaign_rater_aggregate(campaign=campaign)

    estimates = RaterEstimate.objects.filter(run=run, attribute="harm").order_by("worker__username")
    with capsys.disabled():
        print(
            f"\nConvAbuse ({run.items} items, {run.judgments} judgments): "
            f"agreement with the majority {run.agreement}"
        )
        for e in estimates:
            print(
                f"  {e.worker.username}: {e.answers} answers, "
                f"estimated accuracy {e.accuracy:.3f}, flagged {e.flagged}"
            )
    assert run.items == len(lines) // 3 > 500
    assert set(run.agreement) == {"harm", "safety", "unsafe"}
    assert all(share >= 0.9 for share in run.agreement.values()), run.agreement
    assert len(estimates) == 8
    assert all(e.answers >= 20 for e in estimates)


# --- the dataset manifest says which aggregation made the labels ------------------------------


@pytest.mark.django_db
def test_a_dataset_manifest_says_its_labels_are_the_majoritys_and_names_the_dawid_skene_run(
    settings, tmp_path, monkeypatch
) -> None:
    from tests.trainer.helpers import labelled_campaigns, tiny_model
    from trainer.services import dataset_builds, requests

    settings.ARTIFACTS_DIR = tmp_path
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    tiny_model()
    ssi, safety = labelled_campaigns(items=6)
    run = rater_models.campaign_rater_aggregate(campaign=ssi)
    dataset = requests.dataset_request(kind="quality_safety", campaigns=[ssi, safety], enqueue=False)

    dataset = dataset_builds.dataset_build(dataset_id=dataset.pk)

    assert dataset.status == "ready", dataset.error
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    assert {c["name"]: c["label_aggregation"] for c in manifest["source_campaigns"]} == {
        ssi.name: {"labels": "majority", "dawid_skene_run": run.pk},
        safety.name: {"labels": "majority", "dawid_skene_run": None},
    }
