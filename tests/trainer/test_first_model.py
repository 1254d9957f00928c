"""The first model (issue 16): pre-trained on the dialogs *and* documents of the search corpus; the
version records its held-out response ranking (Hits@1 on its validation turns), the same figure
the saved model gives when ranked again, and its page shows it beside the validation loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from groundwork.roles import Role
from tests.factories import dialog_with_turns
from tests.trainer.helpers import TINY, TOPICS
from toolset.models import Document
from trainer import hits, records, sampling
from trainer import tokenizer as tokenizers
from trainer.modeling import GroundworkForCausalLM
from trainer.services import training_jobs

pytestmark = pytest.mark.django_db


def test_the_first_model_trains_on_dialogs_and_documents_and_records_its_ranking(
    settings: Any, tmp_path: Path, client: Any, users: dict[Role, Any]
) -> None:
    settings.ARTIFACTS_DIR = tmp_path
    settings.FIRST_MODEL_DOCUMENTS = 3
    for i in range(60):
        topic = TOPICS[i % len(TOPICS)]
        dialog_with_turns(
            [f"What do you think about {topic} ({i})?", f"I like {topic}, number {i} especially."],
            external_id=f"pretrain-{i}",
            purpose="pretrain",
        )
    for i, topic in enumerate(TOPICS[:4]):
        Document.objects.create(url=f"https://example.org/{topic}", title=topic.title(), body=f"{topic} {i}.")
    lines: list[str] = []

    version = training_jobs.first_model_ensure(steps=10, model=TINY, vocab_size=400, say=lines.append)

    assert version.job is not None
    dataset = version.job.datasets.get()
    assert dataset.counts["splits"]["train"]["document"] == 3
    assert dataset.filters["documents"] == 3
    assert any("and 3 documents" in line for line in lines)
    validation = list(
        records.read_rows(dataset.path, "validation", ("kind", "dialog", "context", "response"))
    )
    train = records.read_rows(dataset.path, "train", ("context", "response"))
    cases = hits.held_out_cases(validation, seen={hits.pair_key(r["context"], r["response"]) for r in train})
    final = version.metrics["final"]
    assert final["hits_contexts"] == len(cases) > 1
    assert final["hits_candidates"] == min(hits.HITS_CANDIDATES, len(cases))
    assert 0 <= final["hits_at_1"] <= 1
    assert "hits_at_1" not in version.metrics["initial"]  # a new model ranks by chance
    # The figure is the saved model's own: ranking its validation turns again gives it back.
    scorer = sampling.Scorer(
        GroundworkForCausalLM.from_pretrained(str(version.path)),
        tokenizers.load(version.path),
        discriminators=False,
    )
    again = hits.hits_at_1(cases, scorer.response_log_likelihoods, seed_key=hits.HELD_OUT_SEED)
    assert again == {key: final[key] for key in ("hits_at_1", "hits_candidates", "hits_contexts")}
    assert any(f"Hits@1 of {final['hits_candidates']}" in line for line in lines)

    client.force_login(users[Role.RESEARCHER])
    page = client.get(reverse("admin:trainer_modelversion_change", args=[version.pk])).content.decode()
    listing = client.get(reverse("admin:trainer_modelversion_changelist")).content.decode()

    shown = f"{100 * final['hits_at_1']:.1f} %"
    assert f"Hits@1 of {final['hits_candidates']}</abbr> ({len(cases)} held-out turns" in page
    assert shown in page
    assert shown in listing
