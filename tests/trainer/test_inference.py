"""The inference service: the serving model answers a dialog by sample-and-rank, every candidate
is kept and the chosen one marked; the research loop asks the toolset and stops at its cap."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from annotation.models import Item
from annotation.services import campaigns
from dialogs.models import Candidate, Turn
from tests.factories import dialog_with_turns
from tests.trainer.helpers import tiny_model
from trainer import formats, inference, sampling

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _artifacts(settings: Any, tmp_path: Any) -> None:
    settings.ARTIFACTS_DIR = tmp_path


def test_the_serving_model_answers_with_sixteen_candidates_kept() -> None:
    version = tiny_model()
    dialog = dialog_with_turns(["What do you think about tea?"], external_id="chat-1", purpose="quality")

    turn = inference.respond(dialog_id=dialog.pk)

    assert turn.speaker == "model"
    assert turn.index == 1
    candidates = list(Candidate.objects.filter(turn=turn))
    assert len(candidates) == 16
    chosen = [c for c in candidates if c.chosen]
    assert len(chosen) == 1
    assert turn.text in (chosen[0].text, inference.FALLBACK)
    # A pre-trained model ranks by likelihood: every usable candidate has its rank score.
    assert all(c.scores["ranking"] == "likelihood" for c in candidates)
    assert all("mean_log_likelihood" in c.scores for c in candidates)
    assert turn.model_version == version.name
    assert turn.fallback in ("", "empty")


def serving_fine_tune(kind: str, name: str) -> Any:
    """A version fine-tuned from the tiny model by a job of ``kind`` (the same weights), serving:
    what it can do follows from its lineage."""
    from trainer.models import ModelVersion, TrainingJob
    from trainer.services import requests

    base = tiny_model()
    job = TrainingJob.objects.create(kind=kind, status="succeeded", total_steps=1)
    version = ModelVersion.objects.create(
        name=name, parent=base, job=job, directory=base.directory, tokenizer_sha256=base.tokenizer_sha256
    )
    return requests.model_serve(model=version)


def test_without_a_serving_model_respond_says_so() -> None:
    dialog = dialog_with_turns(["Hi"], external_id="chat-2", purpose="quality")
    with pytest.raises(inference.NoModel, match="no model version serves yet"):
        inference.respond(dialog_id=dialog.pk)


class AlwaysAsks(torch.nn.Module):
    """A model that always wants another query (``<TS>`` after every prefix) and never ends a query
    before its first token: the research loop must stop at its cap."""

    def __init__(self, model: Any, ts: int, eos: int) -> None:
        super().__init__()
        self.inner, self.ts, self.eos, self.config = model, ts, eos, model.config

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        out = self.inner(input_ids, **kwargs)
        after_ts = input_ids[:, -1] == self.ts
        out.logits[~after_ts, -1, self.ts] += 100.0
        out.logits[after_ts, -1, self.eos] -= 100.0
        return out


def test_the_research_loop_stops_at_the_query_cap() -> None:
    version = tiny_model()
    scorer = inference.scorer_for(version)
    asking = sampling.Scorer(
        AlwaysAsks(scorer.model, scorer.ts, scorer.eos), scorer.tokenizer, discriminators=False
    )
    asked: list[str] = []

    def ask(query: str) -> dict[str, str]:
        asked.append(query)
        return {"title": "", "url": f"https://example.org/{len(asked)}", "snippet": f"snippet {len(asked)}"}

    trace = asking.research([("user", "Tell me about owls.")], "Owls are birds.", ask, max_queries=3)

    assert len(asked) == 3
    assert trace.capped
    assert [s["url"] for s in trace.steps] == [f"https://example.org/{i}" for i in (1, 2, 3)]
    assert trace.response  # made to answer (with <User>) after the third query


class Recording(AlwaysAsks):
    """``AlwaysAsks`` that keeps every input the research loop decides the next speaker on."""

    def __init__(self, model: Any, ts: int, eos: int) -> None:
        super().__init__(model, ts, eos)
        self.fed: list[list[int]] = []

    def forward(self, input_ids: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs.get("use_cache") is False:
            self.fed.append(input_ids[0].tolist())
        return super().forward(input_ids, **kwargs)


def test_the_research_loop_shows_the_model_each_result_as_the_training_examples_do() -> None:
    """What the grounded model reads after a query is what task 2 trained it on: the result's
    title and URL (the source it may cite), then the snippet."""
    version = tiny_model()
    scorer = inference.scorer_for(version)
    model = Recording(scorer.model, scorer.ts, scorer.eos)
    asking = sampling.Scorer(model, scorer.tokenizer, discriminators=False)
    results = [
        {"title": "Owl", "url": "https://en.wikipedia.org/wiki/Owl", "snippet": "Owls are birds of prey."},
        {"title": "", "url": "", "snippet": "7856"},  # the calculator's: no source
    ]
    context, base = [("user", "Tell me about owls.")], "Owls are birds."

    trace = asking.research(
        context,
        base,
        lambda query: results[len(model.fed) - 1],
        max_queries=2,
        settings=sampling.Settings(max_prompt_tokens=100_000, max_new_tokens=8),
        generator=torch.Generator().manual_seed(0),
    )

    assert [(s["title"], s["url"], s["snippet"]) for s in trace.steps] == [
        (r["title"], r["url"], r["snippet"]) for r in results
    ]
    steps = [formats.Step(s["query"], s["title"], s["url"], s["snippet"]) for s in trace.steps]
    # The last input the loop chose a speaker on holds the first query and its result.
    fed = model.fed[-1]
    assert fed == formats.research_prefix(scorer.tokenizer, context, base, steps[:1])
    shown = scorer.tokenizer.decode(fed)
    assert shown.endswith(
        f"<TS> {steps[0].query}<snippet> [Owl](https://en.wikipedia.org/wiki/Owl) Owls are birds of prey."
    )
    # ... and it is the training example of that step, without its outcome.
    example = formats.research_step(scorer.tokenizer, context, base, steps[:1], ("TS", steps[1].query))
    assert example.ids[: len(fed)] == fed
    assert example.loss_mask[: len(fed)] == [0] * len(fed)


def test_admins_see_a_model_turns_candidates_with_their_scores(client: Any, users: dict[Any, Any]) -> None:
    tiny_model()
    dialog = dialog_with_turns(["What do you think about rain?"], external_id="chat-3", purpose="quality")
    turn = inference.respond(dialog_id=dialog.pk)
    client.force_login(users["admin"])

    dialog_page = client.get(f"/admin/dialogs/dialog/{dialog.pk}/change/").content.decode()
    turn_page = client.get(f"/admin/dialogs/turn/{turn.pk}/change/").content.decode()

    assert "16 candidates" in dialog_page
    assert turn_page.count("mean_log_likelihood") == 16


def test_a_grounded_model_researches_with_the_toolset_and_the_turn_keeps_the_trace(settings: Any) -> None:
    from tests.annotation.helpers import rewrite_corpus
    from toolset.models import ToolCall

    # Its lineage has a groundedness fine-tune: it researches.
    grounded = serving_fine_tune("finetune_groundedness", "grounded")
    rewrite_corpus()  # a small search corpus, indexed
    loaded = inference.scorer_for(grounded)
    inference._loaded[grounded.name] = sampling.Scorer(
        AlwaysAsks(loaded.model, loaded.ts, loaded.eos), loaded.tokenizer, discriminators=False
    )
    settings.RESEARCH_MAX_QUERIES = 2
    dialog = dialog_with_turns(["Tell me about jaguars."], external_id="chat-4", purpose="groundedness")

    turn = inference.respond(dialog_id=dialog.pk)

    assert turn.base_text  # the sample-and-rank answer, before research
    assert len(turn.research) == 2
    assert all(set(step) == {"query", "title", "url", "snippet"} for step in turn.research)
    calls = ToolCall.objects.filter(actor_model="grounded")
    assert calls.count() >= 2  # every tool that ran for each query is logged
    assert {c.session for c in calls} == {f"dialog-{dialog.pk}-turn-1"}


class AlwaysUnsafe(sampling.Scorer):
    """A scorer whose UNSAFE discriminator says ``<1>`` for every response (the others are the
    model's own): every candidate is predicted unsafe."""

    def score_with_cache(
        self, cache: Any, prompt_length: int, lengths: Any, attributes: Any, prompt_mask: Any = None
    ) -> dict:
        scores = super().score_with_cache(cache, prompt_length, lengths, attributes, prompt_mask)
        if "UNSAFE" in scores:
            scores["UNSAFE"] = [1.0] * len(lengths)
        return scores


def serving_unsafe_model() -> Any:
    """A version fine-tuned for quality and safety (so it ranks with discriminators), serving, whose
    discriminators predict every candidate unsafe."""
    version = serving_fine_tune("finetune_quality_safety", "qs-unsafe")
    loaded = inference.scorer_for(version)
    assert loaded.discriminators
    inference._loaded[version.name] = AlwaysUnsafe(loaded.model, loaded.tokenizer, discriminators=True)
    return version


def test_when_every_candidate_is_predicted_unsafe_the_safe_fallback_reply_is_sent_marked_and_counted(
    settings: Any, client: Any, users: dict[Any, Any]
) -> None:
    settings.SAFE_FALLBACK_REPLY = "Let us talk about something else."
    version = serving_unsafe_model()
    dialog = dialog_with_turns(["Tell me how to hurt someone."], external_id="chat-5", purpose="safety")

    turn = inference.respond(dialog_id=dialog.pk)

    assert turn.text == "Let us talk about something else."
    assert turn.fallback == Turn.Fallback.UNSAFE
    assert turn.model_version == version.name
    # Every candidate is kept, none chosen, each saying why it was refused.
    candidates = list(Candidate.objects.filter(turn=turn))
    assert len(candidates) == 16
    assert not any(c.chosen for c in candidates)
    assert all(
        c.scores["dropped"].startswith("P(UNSAFE=0) 0.00 < 0.5") for c in candidates if c.scores["tokens"]
    )

    # Not put in a rating campaign, unless the campaign asks for fallback replies.
    default = campaigns.campaign_create(
        name="safety", kind="ssi", filters=campaigns.DialogFilters(purpose="safety")
    )
    assert not Item.objects.filter(campaign=default).exists()
    with_fallbacks = campaigns.campaign_create(
        name="fallbacks", kind="ssi", filters=campaigns.DialogFilters(purpose="safety", include_fallback=True)
    )
    assert list(Item.objects.filter(campaign=with_fallbacks).values_list("turn", flat=True)) == [turn.pk]

    # Counted where an admin looks: the model version's page and list, and the turns' filter.
    client.force_login(users["admin"])
    page = client.get(f"/admin/trainer/modelversion/{version.pk}/change/").content.decode()
    assert "1 model turn</a>" in page
    assert "1 fallback reply</a>" in page
    listing = client.get("/admin/trainer/modelversion/").content.decode()
    assert '<td class="field-fallback_replies">1</td>' in listing
    turns = client.get("/admin/dialogs/turn/", {"fallback__exact": "unsafe"}).content.decode()
    assert "Let us talk about something else." in turns
    assert "Every candidate predicted unsafe (1)" in turns
