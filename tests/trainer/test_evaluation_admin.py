"""The evaluation pages of the admin: a researcher evaluates a model version from its page (the
"Evaluate" form) or from the evaluation list; admins watch the list and the page (progress bar,
polled while it runs; the metrics once done) but may not start one."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from dialogs.evaluation_sets import evaluation_set_import, parse_objects
from groundwork.roles import Role
from trainer.models import Evaluation, ModelVersion

pytestmark = pytest.mark.django_db

METRICS = {
    "discriminators": {"SENSIBLE": 0.8125, "UNSAFE": 0.0625},
    "hits_at_1": 0.35,
    "hits_candidates": 20,
    "hits_contexts": 40,
    "validation_loss": 2.5,
    "contexts_per_second": 3.25,
    "fallbacks": 2,
}


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:trainer_{name}", args=args)


@pytest.fixture
def version() -> ModelVersion:
    return ModelVersion.objects.create(name="gw-1", directory="models/gw-1", tokenizer_sha256="t" * 64)


@pytest.fixture
def chosen() -> Any:
    contexts = [
        {"id": f"c{i}", "purpose": "quality", "context": [{"speaker": "user", "text": f"Hi {i}"}]}
        for i in range(5)
    ]
    return evaluation_set_import(name="mtb", records=parse_objects(contexts)).evaluation_set


def test_a_researcher_evaluates_a_version_from_its_page(client, users, version, chosen) -> None:
    client.force_login(users[Role.RESEARCHER])

    page = client.get(url("modelversion_change", version.pk)).content.decode()
    assert "Not evaluated on any evaluation set yet." in page
    assert f'action="{url("evaluation_add")}"' in page
    assert f'<option value="{chosen.pk}">mtb v1 · 5 contexts</option>' in page

    answer = client.post(url("evaluation_add"), {"model_version": version.pk, "evaluation_set": chosen.pk})

    evaluation = Evaluation.objects.get()
    assert answer.status_code == 302
    assert answer["Location"] == url("evaluation_change", evaluation.pk)
    assert (evaluation.model_version, evaluation.evaluation_set, evaluation.status) == (
        version,
        chosen,
        "pending",
    )
    assert evaluation.requested_by == users[Role.RESEARCHER]
    chosen.refresh_from_db()
    assert chosen.locked
    evaluation_page = client.get(answer["Location"]).content.decode()
    assert f'hx-get="{url("evaluation_progress", evaluation.pk)}"' in evaluation_page  # polled while pending
    assert '<progress value="0" max="5"></progress> 0 / 5' in evaluation_page
    page = client.get(url("modelversion_change", version.pk)).content.decode()
    assert f'<a href="{url("evaluation_change", evaluation.pk)}">mtb v1</a>' in page
    listing = client.get(url("evaluation_changelist")).content.decode()
    assert f'href="{url("evaluation_add")}" class="addlink">Evaluate a model version</a>' in listing


def test_an_admin_watches_evaluations_but_may_not_start_one(client, users, version, chosen) -> None:
    running = Evaluation.objects.create(
        evaluation_set=chosen, model_version=version, status="running", done=2, total=5, worker="host:1"
    )
    other = ModelVersion.objects.create(name="gw-2", directory="models/gw-2", tokenizer_sha256="t" * 64)
    done = Evaluation.objects.create(
        evaluation_set=chosen, model_version=other, status="done", done=5, total=5, metrics=METRICS
    )
    client.force_login(users[Role.ADMIN])

    listing = client.get(url("evaluation_changelist")).content.decode()
    assert '<progress value="2" max="5"></progress> 2 / 5' in listing
    assert '<td class="field-hits">0.350</td>' in listing
    assert url("evaluation_add") not in listing
    assert client.get(url("evaluation_add")).status_code == 403
    assert (
        client.post(
            url("evaluation_add"), {"model_version": version.pk, "evaluation_set": chosen.pk}
        ).status_code
        == 403
    )
    page = client.get(url("modelversion_change", version.pk)).content.decode()
    assert url("evaluation_add") not in page  # no Evaluate form
    assert f'<a href="{url("evaluation_change", running.pk)}">mtb v1</a>' in page

    fragment = client.get(url("evaluation_progress", running.pk)).content.decode()
    assert 'id="evaluation-panel"' in fragment
    assert "hx-get" in fragment  # still polled
    finished = client.get(url("evaluation_change", done.pk)).content.decode()
    assert "hx-get" not in finished.split('id="evaluation-panel"')[1].split(">")[0]
    for figure in (
        '<th>Hits@1</th><td class="number">0.350</td>',
        '<td>SENSIBLE</td><td class="number">0.812</td>',
    ):
        assert figure in finished
    assert '<th>contexts per second</th><td class="number">3.25</td>' in finished


def test_the_add_form_refuses_without_a_set(client, users, version) -> None:
    client.force_login(users[Role.RESEARCHER])

    answer = client.post(url("evaluation_add"), {"model_version": version.pk})

    assert answer.status_code == 200
    assert "This field is required." in answer.content.decode()
    assert not Evaluation.objects.exists()
