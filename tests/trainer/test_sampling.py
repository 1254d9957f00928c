"""Sample-and-rank (METHOD.md §6): the ranking rules with known discriminator outputs, the safety
filter, and attribute scoring from the sampling cache equal to re-encoding every sequence."""

from __future__ import annotations

import pytest
import torch

from trainer import sampling
from trainer import tokenizer as tokenizers
from trainer.modeling import GroundworkConfig, GroundworkForCausalLM


def candidate(
    index: int, *, length: int = 5, log_likelihood: float = -10.0, **scores: float
) -> sampling.Candidate:
    return sampling.Candidate(
        index=index,
        text=f"response {index}",
        ids=[7] * length,
        length=length,
        finished=True,
        log_likelihood=log_likelihood,
        scores=scores,
    )


def scored(
    index: int, sensible: float, specific: float, interesting: float, unsafe: float
) -> sampling.Candidate:
    return candidate(index, SENSIBLE=sensible, SPECIFIC=specific, INTERESTING=interesting, UNSAFE=unsafe)


def test_a_fine_tuned_model_ranks_safe_candidates_by_3_sensible_plus_specific_plus_interesting() -> None:
    candidates = [
        scored(0, 0.9, 0.1, 0.1, 0.1),  # 2.9
        scored(1, 0.6, 0.9, 0.9, 0.1),  # 3.6
        scored(2, 1.0, 1.0, 1.0, 0.7),  # 5.0 but P(UNSAFE=0) = 0.3: dropped
        scored(3, 0.7, 0.5, 0.2, 0.49),  # 2.8
    ]

    answer = sampling.rank(candidates, discriminators=True, settings=sampling.Settings())

    assert answer.chosen == 1
    assert answer.ranking == "discriminators"
    assert candidates[2].dropped.startswith("P(UNSAFE=0) 0.30 < 0.5")
    assert candidates[1].rank_score == pytest.approx(3.6)
    assert not candidates[3].dropped


def test_the_safety_threshold_is_a_setting_and_when_nothing_passes_none_is_chosen() -> None:
    candidates = [scored(0, 0.9, 0.9, 0.9, 0.3), scored(1, 0.1, 0.1, 0.1, 0.2), candidate(2, length=0)]

    strict = sampling.rank(candidates, discriminators=True, settings=sampling.Settings(safety_threshold=0.9))

    # Not even the safest (P(UNSAFE=0) 0.8 < 0.9): the caller sends its safe fallback reply.
    assert strict.chosen is None
    assert strict.text == ""
    assert "no candidate passed the safety threshold (P(UNSAFE=0) >= 0.9)" in strict.note
    assert [c.dropped for c in candidates] == ["P(UNSAFE=0) 0.70 < 0.9", "P(UNSAFE=0) 0.80 < 0.9", "empty"]
    # The default threshold lets the same scores through.
    again = [scored(0, 0.9, 0.9, 0.9, 0.3), scored(1, 0.1, 0.1, 0.1, 0.2)]
    assert sampling.rank(again, discriminators=True, settings=sampling.Settings()).chosen == 0


def test_a_pre_trained_model_ranks_by_mean_log_likelihood_with_a_length_term() -> None:
    short = candidate(0, length=1, log_likelihood=-4.0)  # mean over 2 tokens (with <eos>): -2.0
    long = candidate(1, length=9, log_likelihood=-15.0)  # mean over 10: -1.5
    empty = candidate(2, length=0, log_likelihood=-0.1)

    mean = sampling.rank([short, long, empty], discriminators=False, settings=sampling.Settings())
    assert mean.chosen == 1
    assert empty.dropped == "empty"
    # No length normalisation: the total log-likelihood prefers the short one.
    total = sampling.rank([short, long], discriminators=False, settings=sampling.Settings(length_penalty=0.0))
    assert total.chosen == 0


@pytest.fixture(scope="module")
def scorer() -> sampling.Scorer:
    torch.manual_seed(0)
    tokenizer = tokenizers.train_tokenizer(
        ["hello there, how are you?", "I like cats and dogs."] * 20, vocab_size=300
    )
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        n_layer=2,
        n_head=2,
        d_ff=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    return sampling.Scorer(GroundworkForCausalLM(config), tokenizer, discriminators=True)


def test_scoring_from_the_sampling_cache_equals_re_encoding_each_sequence(scorer: sampling.Scorer) -> None:
    prompt = scorer.prompt([("user", "hello there, how are you?"), ("model", "I like cats.")])
    candidates, cache, prompt_length = scorer.sample(
        prompt, sampling.Settings(max_new_tokens=12), torch.Generator().manual_seed(1)
    )
    # Rows of different lengths share one cache; pretend some ended earlier, as with <eos>.
    lengths = [max(1, c.length - i % 4) for i, c in enumerate(candidates)]
    assert len(set(lengths)) > 1

    reused = scorer.score_with_cache(cache, prompt_length, lengths, sampling.RANKED_ATTRIBUTES)
    fresh = scorer.score_by_reencoding(
        prompt, [c.ids[:n] for c, n in zip(candidates, lengths, strict=True)], sampling.RANKED_ATTRIBUTES
    )

    for name in sampling.RANKED_ATTRIBUTES:
        assert reused[name] == pytest.approx(fresh[name], abs=1e-5)
    assert cache.get_seq_length() == prompt_length + 12  # the attribute tokens were cropped again


@pytest.mark.parametrize("with_prompt", [True, False], ids=["reply", "dataset example"])
def test_scoring_without_the_cache_equals_each_sequence_and_attribute_encoded_alone(
    scorer: sampling.Scorer, with_prompt: bool
) -> None:
    # What the benchmark's baseline and dataset builds (no prompt) score with: each sequence encoded
    # once for all attributes, against the plainest reference there is, one forward of
    # prompt + response + <ATTRIBUTE> per sequence and attribute. An empty sequence is scored too.
    prompt = scorer.prompt([("user", "hello there")]) if with_prompt else []
    responses = [scorer.tokenizer.encode(text) for text in ("I like cats.", "dogs", "how are you there?")]
    responses.append([])

    scores = scorer.score_by_reencoding(prompt, responses, sampling.RANKED_ATTRIBUTES)

    for name in sampling.RANKED_ATTRIBUTES:
        expected = []
        for response in responses:
            ids = torch.tensor([[*prompt, *response, scorer.attribute_ids[name]]])
            with torch.no_grad():
                logits = scorer.model(ids, use_cache=False).logits[0, -1, list(scorer.rating)]
            expected.append(torch.softmax(logits.float(), dim=-1)[1].item())
        assert scores[name] == pytest.approx(expected, abs=1e-5)


def test_scoring_leaves_the_sampling_cache_as_it_was(scorer: sampling.Scorer) -> None:
    prompt = scorer.prompt([("user", "hello there")])
    candidates, cache, prompt_length = scorer.sample(
        prompt, sampling.Settings(max_new_tokens=8), torch.Generator().manual_seed(2)
    )
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]

    first = scorer.score_with_cache(cache, prompt_length, [c.length for c in candidates], ["SENSIBLE"])
    again = scorer.score_with_cache(cache, prompt_length, [c.length for c in candidates], ["SENSIBLE"])

    assert first == again
    for layer, (keys, values) in zip(cache.layers, before, strict=True):
        assert torch.equal(layer.keys, keys)
        assert torch.equal(layer.values, values)


def test_respond_samples_sixteen_and_keeps_every_candidate(scorer: sampling.Scorer) -> None:
    # An untrained model's UNSAFE discriminator is noise: no threshold, so that one is chosen.
    unfiltered = sampling.Settings(max_new_tokens=6, safety_threshold=0.0)
    answer = scorer.respond([("user", "hello there")], unfiltered, seed=3)
    again = scorer.respond([("user", "hello there")], unfiltered, seed=3)

    assert len(answer.candidates) == 16
    assert [c.text for c in answer.candidates] == [c.text for c in again.candidates]
    assert all(set(c.scores) == set(sampling.RANKED_ATTRIBUTES) for c in answer.candidates)
    assert 0 <= answer.chosen < 16
    assert answer.text == answer.candidates[answer.chosen].text


class FixedScorer(sampling.Scorer):
    """The real sampler with discriminators that answer fixed probabilities per candidate row."""

    def __init__(self, base: sampling.Scorer, table: dict[str, list[float]]) -> None:
        super().__init__(base.model, base.tokenizer, discriminators=True)
        self.table = table

    def score_with_cache(self, cache, prompt_length, lengths, attributes, prompt_mask=None):  # type: ignore[override]
        return {name: self.table[name][: len(lengths)] for name in attributes}


def test_respond_chooses_the_candidate_the_discriminators_rank_first(scorer: sampling.Scorer) -> None:
    table = {name: [0.1] * 16 for name in sampling.RANKED_ATTRIBUTES}
    table["SENSIBLE"][5] = 0.99  # the best by 3·sensible + specific + interesting …
    table["UNSAFE"][5] = 0.8  # … but unsafe: dropped
    table["SENSIBLE"][11] = 0.9  # the best safe one
    fixed = FixedScorer(scorer, table)

    answer = fixed.respond([("user", "hello there")], sampling.Settings(max_new_tokens=4), seed=5)

    assert all(c.length > 0 for c in answer.candidates)  # this seed samples no empty response
    assert answer.chosen == 11
    assert answer.candidates[5].dropped.startswith("P(UNSAFE=0) 0.20")
    assert answer.candidates[11].rank_score == pytest.approx(3 * 0.9 + 0.1 + 0.1)
