"""Issue 17, preference data, in Chromium: a researcher exports a preference dataset from a
rewrite campaign and rated SSI and safety campaigns (Datasets → Export dataset), is told when
the form lacks something, watches the real worker build it, and reads the pairs by source on the
dataset's page as its manifest has them; then fine-tunes on it with DPO from the Retrain form and
reads the DPO figures (loss, reward accuracy) before and after on the job's page."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from groundwork.roles import Role
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.trainer.helpers import tiny_model
from tests.trainer.test_preference_data import rating_campaigns, rewrite_campaign_with_candidates
from trainer.models import DatasetVersion, ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_researcher_exports_preference_pairs_and_fine_tunes_on_them(
    page: Page, live_server: Any, celery_worker: None, training_worker: subprocess.Popen
) -> None:
    base = tiny_model()
    ssi, safety = rating_campaigns()
    rewrite = rewrite_campaign_with_candidates()
    researcher = UserFactory(role=Role.RESEARCHER)
    log_in(page, live_server.url, researcher.username, DEFAULT_PASSWORD)

    page.goto(f"{live_server.url}/admin/trainer/datasetversion/")
    page.get_by_role("link", name="Export dataset").click()
    page.get_by_label("Kind").select_option(
        label="Preference (chosen/rejected pairs and KTO rows, from crowd work)"
    )
    page.get_by_role("button", name="Export dataset").click()
    # No campaign chosen: the form says so, and nothing is queued.
    expect(page.locator(".errornote")).to_contain_text("Please correct the error below.")
    expect(page.locator("ul.errorlist")).to_contain_text(
        "choose at least one campaign of kind “Sensibleness, specificity, interestingness”, “Safety”, "
        "“Groundedness: rewrite with sources” or “Side by side: the better of two responses”"
    )
    assert not DatasetVersion.objects.filter(kind=DatasetVersion.Kind.PREFERENCE).exists()

    for campaign in (ssi, safety, rewrite):
        page.get_by_label(campaign.name, exact=True).check()
    page.get_by_label("Validation percent").fill("0")
    page.get_by_role("button", name="Export dataset").click()
    panel = page.locator("#dataset-panel")
    expect(page.get_by_text(re.compile(r"Dataset \d+ queued"))).to_be_visible()
    # The panel polls until the worker has written the files.
    expect(panel.get_by_role("link", name="kto_train.parquet")).to_be_visible(timeout=30_000)
    expect(panel).to_contain_text("Ready")

    dataset = DatasetVersion.objects.get(kind=DatasetVersion.Kind.PREFERENCE)
    manifest = json.loads((dataset.path / "manifest.json").read_text())
    # Rated responses to one prompt give 3 pairs, the three raters' rewrites 3, the labelled
    # candidates 1; nothing is side by side (tests.trainer.test_preference_data says why).
    assert manifest["pairs_by_source"] == {"rewrite": 3, "candidates": 1, "ratings": 3, "pairwise": 0}
    examples = panel.locator("table").first
    expect(examples.locator("thead th")).to_have_text(["kind", "train", "validation"])
    for source, pairs in manifest["pairs_by_source"].items():
        row = examples.locator("tr", has=page.get_by_role("cell", name=f"pairs/{source}", exact=True))
        if pairs:
            expect(row.locator("td")).to_have_text([f"pairs/{source}", str(pairs), "0"])
        else:
            expect(row).to_have_count(0)
    kto = examples.locator("tr", has=page.get_by_role("cell", name="kto/ratings", exact=True))
    expect(kto.locator("td")).to_have_text(
        ["kto/ratings", str(manifest["unpaired_by_source"]["ratings"]), "0"]
    )
    expect(examples.locator("tr").last.locator("th")).to_have_text(["all", "10", "0"])
    expect(panel).to_contain_text("Label balance")
    expect(panel.locator("table").nth(1)).to_contain_text("KTO")
    expect(panel.locator("pre.manifest")).to_contain_text('"pairs_by_source": {')

    # Fine-tune the serving model on the pairs with DPO: the Retrain form, a few steps.
    page.goto(f"{live_server.url}/admin/trainer/trainingjob/")
    page.get_by_role("link", name="Retrain", exact=True).click()
    page.get_by_label("Kind").select_option("finetune_preference")
    page.get_by_label(re.compile(rf"#{dataset.pk} Preference")).check()
    page.get_by_label("Steps").fill("10")
    page.get_by_label("Batch size").fill("4")
    page.get_by_role("button", name="Start training").click()
    job = page.locator("#job-panel")
    expect(job).to_contain_text(re.compile(r"Queued|Running"))
    expect(job).to_contain_text("Succeeded", timeout=45_000)
    expect(job).to_contain_text("step 10 / 10")
    expect(job.locator("svg.loss-curve polyline")).to_have_count(1)  # the DPO loss, step by step
    expect(job).not_to_have_attribute("hx-trigger", re.compile("every"))
    version = ModelVersion.objects.exclude(pk=base.pk).get()
    expect(job.get_by_role("link", name=version.name)).to_be_visible()
    assert version.name.endswith("-ft-preference")
    assert version.parent == base
    # The DPO figures on the 7 training pairs, before and after, as the job's metrics have them;
    # validation_percent 0 left no validation pairs, and the page says so.
    before = version.job.metrics["initial"]["preference"]["train"]
    after = version.job.metrics["final"]["preference"]["train"]
    figures = job.locator("table.preference")
    accuracy = figures.locator("tr", has=page.get_by_role("cell", name="reward accuracy", exact=True))
    expect(accuracy.locator("td")).to_have_text(
        [
            "reward accuracy",
            "training",
            "7",
            f"{100 * before['reward_accuracy']:.1f} %",
            f"{100 * after['reward_accuracy']:.1f} %",
            f"{100 * (after['reward_accuracy'] - before['reward_accuracy']):+.1f} pp",
        ]
    )
    loss = figures.locator("tr", has=page.get_by_role("cell", name="DPO loss", exact=True))
    expect(loss.locator("td").nth(3)).to_have_text("0.693")  # log 2: the base model is the reference
    expect(loss.locator("td").nth(4)).to_have_text(f"{after['dpo_loss']:.3f}")
    expect(figures).to_contain_text("no validation pairs in the job's datasets")
