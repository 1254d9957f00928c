"""Sample-and-rank of several contexts at once (``Scorer.respond_batch``, what an evaluation runs):
left padding changes nothing a row computes — each candidate's log-likelihood and attribute scores
equal re-encoding its own context and response alone — answers have the shape and settings of
one-at-a-time answers, and a seed makes a batch repeat exactly."""

from __future__ import annotations

import pytest
import torch

from trainer import formats, sampling
from trainer import tokenizer as tokenizers
from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

# Contexts of different lengths: the batch pads the short ones on the left.
CONTEXTS = [
    [("user", "hello")],
    [("user", "hello there, how are you? I like cats"), ("model", "dogs and cats"), ("user", "why?")],
    [("user", "I like cats and dogs.")],
]


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


@torch.no_grad()
def _log_likelihood_alone(scorer: sampling.Scorer, prompt: list[int], candidate: sampling.Candidate) -> float:
    """The candidate's log-likelihood re-encoded with its own prompt only (no batch, no padding)."""
    ids = [*prompt, *candidate.ids, *([scorer.eos] if candidate.finished else [])]
    log_probs = scorer.model(torch.tensor([ids]), use_cache=False).logits[0].float().log_softmax(-1)
    return sum(
        float(log_probs[len(prompt) - 1 + j, ids[len(prompt) + j]]) for j in range(len(ids) - len(prompt))
    )


def test_a_padded_batch_computes_what_each_context_alone_would(scorer: sampling.Scorer) -> None:
    prompts = [scorer.prompt(context) for context in CONTEXTS]
    assert len({len(p) for p in prompts}) == 3  # every row but the longest is padded

    sampled = scorer.sample_batch(
        prompts, sampling.Settings(max_new_tokens=10), torch.Generator().manual_seed(1)
    )
    rows = [c for group in sampled.candidates for c in group]
    batched = scorer.score_with_cache(
        sampled.cache,
        sampled.prompt_length,
        [c.length for c in rows],
        sampling.RANKED_ATTRIBUTES,
        prompt_mask=sampled.prompt_mask,
    )

    assert [len(group) for group in sampled.candidates] == [16, 16, 16]
    for b, prompt in enumerate(prompts):
        group = sampled.candidates[b]
        alone = scorer.score_by_reencoding(prompt, [c.ids for c in group], sampling.RANKED_ATTRIBUTES)
        for name in sampling.RANKED_ATTRIBUTES:
            assert batched[name][b * 16 : (b + 1) * 16] == pytest.approx(alone[name], abs=1e-5)
        for candidate in group:
            assert candidate.log_likelihood == pytest.approx(
                _log_likelihood_alone(scorer, prompt, candidate), abs=1e-3
            )


def test_batched_and_one_at_a_time_answers_have_the_same_shape_and_a_seed_repeats_a_batch(
    scorer: sampling.Scorer,
) -> None:
    settings = sampling.Settings(max_new_tokens=8, safety_threshold=0.0)

    batched = scorer.respond_batch(CONTEXTS, settings, seed=7)
    again = scorer.respond_batch(CONTEXTS, settings, seed=7)
    alone = [scorer.respond(context, settings, seed=7) for context in CONTEXTS]

    assert [[c.text for c in a.candidates] for a in batched] == [
        [c.text for c in a.candidates] for a in again
    ]
    assert [a.chosen for a in batched] == [a.chosen for a in again]
    for answer in (*batched, *alone):
        assert len(answer.candidates) == settings.candidates
        assert answer.ranking == "discriminators"
        assert all(c.length <= settings.max_new_tokens for c in answer.candidates)
        assert all(set(c.scores) == set(sampling.RANKED_ATTRIBUTES) for c in answer.candidates)
        assert answer.chosen is not None
        assert answer.text == answer.candidates[answer.chosen].text
    # One context alone is a batch of one: the same seed gives the same answer either way.
    assert [c.text for c in scorer.respond_batch(CONTEXTS[:1], settings, seed=7)[0].candidates] == [
        c.text for c in alone[0].candidates
    ]


def test_response_likelihoods_are_those_of_each_generative_example_alone(scorer: sampling.Scorer) -> None:
    pairs = [(CONTEXTS[0], "hello there"), (CONTEXTS[1], "cats"), (CONTEXTS[2], "I like dogs, how are you?")]

    batched = scorer.response_log_likelihoods(pairs)

    for (context, response), value in zip(pairs, batched, strict=True):
        example = formats.generative(scorer.tokenizer, context, response)
        with torch.no_grad():
            logits = scorer.model(torch.tensor([example.ids]), use_cache=False).logits[0].float()
        log_probs = logits.log_softmax(-1)
        scored = [float(log_probs[i - 1, example.ids[i]]) for i, bit in enumerate(example.loss_mask) if bit]
        assert value == pytest.approx(sum(scored) / len(scored), abs=1e-4)


def test_one_candidate_per_context_is_sampled_as_its_likelihood_says(scorer: sampling.Scorer) -> None:
    """The shared-prompt cache with no copy at all (one candidate a prompt)."""
    prompts = [scorer.prompt(context) for context in CONTEXTS]
    settings = sampling.Settings(candidates=1, max_new_tokens=6)

    sampled = scorer.sample_batch(prompts, settings, torch.Generator().manual_seed(3))

    assert [len(group) for group in sampled.candidates] == [1, 1, 1]
    for prompt, (candidate,) in zip(prompts, sampled.candidates, strict=True):
        assert candidate.log_likelihood == pytest.approx(
            _log_likelihood_alone(scorer, prompt, candidate), abs=1e-3
        )
