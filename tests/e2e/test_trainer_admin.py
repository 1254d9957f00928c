"""Issue 5 done-when, in Chromium: a researcher exports a dataset from labelled campaigns, starts
a retrain from the admin, watches it progress (htmx), and gets a model version with metrics and
lineage. Real workers (default and training queues) do the work."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from groundwork.roles import Role
from tests.e2e.helpers import log_in
from tests.factories import DEFAULT_PASSWORD, UserFactory
from tests.trainer.helpers import labelled_campaigns, tiny_model
from trainer.models import ModelVersion

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_researcher_exports_retrains_and_gets_a_model_version(
    page: Page, live_server: Any, celery_worker: None, training_worker: subprocess.Popen
) -> None:
    base = tiny_model()
    ssi, safety = labelled_campaigns(items=20)
    researcher = UserFactory(role=Role.RESEARCHER)
    log_in(page, live_server.url, researcher.username, DEFAULT_PASSWORD)

    page.goto(f"{live_server.url}/admin/trainer/datasetversion/add/")
    page.get_by_label("Kind").select_option("quality_safety")
    page.get_by_label(ssi.name).check()
    page.get_by_label(safety.name).check()
    page.get_by_role("button", name="Export dataset").click()
    # The build panel polls until the worker has written the files.
    expect(page.get_by_role("link", name="train.parquet")).to_be_visible(timeout=60_000)
    expect(page.locator("#dataset-panel")).to_contain_text("Ready")

    page.goto(f"{live_server.url}/admin/trainer/trainingjob/add/")
    page.get_by_label("Kind").select_option("finetune_quality_safety")
    page.get_by_label(re.compile(r"Quality and safety")).check()
    page.get_by_label("Steps").fill("40")
    page.get_by_role("button", name="Start training").click()
    panel = page.locator("#job-panel")
    expect(panel).to_contain_text(re.compile(r"Queued|Running"))
    # The page updates itself while the job runs, then stops polling once it succeeded.
    expect(panel).to_contain_text("Succeeded", timeout=120_000)
    expect(panel).to_contain_text("step 40 / 40")
    expect(panel.locator("svg.loss-curve polyline")).to_have_count(1)
    expect(panel).not_to_have_attribute("hx-trigger", re.compile("every"))

    version = ModelVersion.objects.exclude(pk=base.pk).get()
    panel.get_by_role("link", name=version.name).click()
    expect(page.get_by_text(base.name).first).to_be_visible()  # lineage: the parent
    expect(page.get_by_text(ssi.name).first).to_be_visible()  # lineage: a source campaign
    page.get_by_role("button", name="Serve this version").click()
    version.refresh_from_db()
    assert version.serving
