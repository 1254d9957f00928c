"""Held-out response ranking, Hits@1 of 20 (``trainer.hits``): the pure function on hand-made
cases with a hand-made score (what it counts, whom it draws from), then the same function with a
tiny real model that learnt some dialogs (the true next turn ranks first) and one that did not."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from trainer import hits, sampling, training
from trainer.formats import generative
from trainer.hyperparameters import Hyperparameters
from trainer.modeling import GroundworkConfig, model_init
from trainer.tokenizer import train_tokenizer

Turns = hits.Turns


def case(i: int, group: str | None = None) -> hits.Case:
    return hits.Case(key=f"c{i}", context=[("user", f"q{i}")], reference=f"a{i}", group=group or f"d{i}")


def matching(pairs: list[tuple[Turns, str]]) -> list[float]:
    """A model that knows every answer: 1 for the answer of its question, 0 for any other."""
    return [1.0 if context[-1][1][1:] == response[1:] else 0.0 for context, response in pairs]


def test_a_case_is_a_hit_only_when_its_reference_ranks_strictly_first() -> None:
    cases = [case(i) for i in range(30)]
    assert hits.hits_at_1(cases, matching, seed_key="s") == {
        "hits_at_1": 1.0,
        "hits_candidates": 20,
        "hits_contexts": 30,
    }
    # Ties are misses: a model that scores everything alike ranks nothing first.
    assert hits.hits_at_1(cases, lambda pairs: [0.5] * len(pairs), seed_key="s")["hits_at_1"] == 0.0

    def knows_the_even_ones(pairs: list[tuple[Turns, str]]) -> list[float]:
        return [
            s if int(c[-1][1][1:]) % 2 == 0 else -s for (c, _), s in zip(pairs, matching(pairs), strict=True)
        ]

    assert hits.hits_at_1(cases, knows_the_even_ones, seed_key="s")["hits_at_1"] == 0.5


def test_the_others_are_other_dialogs_references_drawn_the_same_way_every_time() -> None:
    # Cases 0-9 are one dialog: none of its references may stand against another of its turns.
    cases = [case(i, group="d0" if i < 10 else None) for i in range(40)]
    seen: list[list[tuple[Turns, str]]] = []

    def record(pairs: list[tuple[Turns, str]]) -> list[float]:
        seen.append(pairs)
        return matching(pairs)

    hits.hits_at_1(cases, record, seed_key="s")
    hits.hits_at_1(cases, record, seed_key="s")
    hits.hits_at_1(cases, record, seed_key="another")
    first, again, other = seen
    assert first == again
    assert first != other
    assert len(first) == 40 * 20
    for index in range(40):
        group = first[index * 20 : (index + 1) * 20]
        assert group[0] == (cases[index].context, cases[index].reference)
        drawn = [response for _, response in group[1:]]
        assert len(set(drawn)) == 19
        assert cases[index].reference not in drawn
        if index < 10:
            assert not {f"a{j}" for j in range(10)} & set(drawn)


def test_few_references_give_all_the_others_and_fewer_than_two_no_figure() -> None:
    assert hits.hits_at_1([case(i) for i in range(5)], matching, seed_key="s") == {
        "hits_at_1": 1.0,
        "hits_candidates": 5,
        "hits_contexts": 5,
    }
    blank = hits.Case(key="b", context=[], reference="  ", group="b")
    assert hits.hits_at_1([case(0), blank], matching, seed_key="s")["hits_at_1"] is None


def test_held_out_cases_are_the_generative_validation_turns_in_a_fixed_order() -> None:
    rows = [
        {
            "kind": "generative",
            "dialog": f"dialog:{i}",
            "context": [{"speaker": "user", "text": f"q{i}"}],
            "response": f"a{i}",
        }
        for i in range(10)
    ] + [{"kind": "discriminative", "dialog": "dialog:x", "context": [], "response": "r"}]
    cases = hits.held_out_cases(rows, most=4)
    assert len(cases) == 4
    assert cases == hits.held_out_cases(list(reversed(rows)), most=4)
    assert all(
        c.group == f"dialog:{c.reference[1:]}" and c.context == [("user", f"q{c.reference[1:]}")]
        for c in cases
    )
    # A turn the training split holds too (the same conversation under another id) is not held out.
    seen = {hits.pair_key([{"speaker": "user", "text": "q3"}], "a3")}
    assert [c.reference for c in hits.held_out_cases(rows, most=100, seen=seen)] == [
        c.reference for c in hits.held_out_cases(rows, most=100) if c.reference != "a3"
    ]


# --- with a tiny real model ------------------------------------------------------------------------

TOPICS = ["cats", "rain", "music", "tea", "chess", "boats", "maps", "bread", "owls", "snow", "kites", "jazz"]
ANSWERS = [
    "Whiskers and naps all day.",
    "Puddles everywhere outside.",
    "Violins make me cry.",
    "Green, with lemon please.",
    "The bishop is my favourite piece.",
    "Sailing on the lake at dawn.",
    "I always get lost anyway.",
    "Sourdough from the oven.",
    "They hoot all night long.",
    "Snowmen in the garden.",
    "Flying them on windy hills.",
    "Saxophones in smoky bars.",
]


def test_a_tiny_model_that_learnt_the_dialogs_ranks_every_true_answer_first(tmp_path: Path) -> None:
    dialogs = [
        ([("user", f"Tell me about {topic}.")], answer) for topic, answer in zip(TOPICS, ANSWERS, strict=True)
    ]
    tokenizer = train_tokenizer(
        [f"Tell me about {t}. {a}" for t, a in zip(TOPICS, ANSWERS, strict=True)], 400
    )
    examples = [(e.ids, e.loss_mask) for e in (generative(tokenizer, c, r) for c, r in dialogs)]
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        d_model=32,
        n_layer=2,
        n_head=2,
        d_ff=64,
    )
    model = model_init(config, seed=0)
    cases = [
        hits.Case(key=str(i), context=context, reference=answer, group=str(i))
        for i, (context, answer) in enumerate(dialogs)
    ]
    untrained = hits.hits_at_1(
        cases, sampling.Scorer(model, tokenizer, discriminators=False).response_log_likelihoods, seed_key="s"
    )
    hp = Hyperparameters(steps=150, learning_rate=1e-2, batch_size=12, warmup_steps=5, checkpoint_every=1000)
    with torch.no_grad():
        before = training.mean_loss(model, examples, pad_id=tokenizer.pad_token_id, max_length=64)
    training.train(
        model, examples, hp, pad_id=tokenizer.pad_token_id, checkpoint_dir=tmp_path, report=lambda p: True
    )
    after = training.mean_loss(model, examples, pad_id=tokenizer.pad_token_id, max_length=64)
    scorer = sampling.Scorer(model, tokenizer, discriminators=False)

    learnt = hits.hits_at_1(cases, scorer.response_log_likelihoods, seed_key="s")
    # The same contexts with each other's answers as references: the model now prefers the true
    # answer, which stands among the others, so no swapped reference ranks first.
    swapped = [
        hits.Case(key=c.key, context=c.context, reference=ANSWERS[(i + 1) % len(ANSWERS)], group=c.key)
        for i, c in enumerate(cases)
    ]
    misled = hits.hits_at_1(swapped, scorer.response_log_likelihoods, seed_key="s")

    assert after < before / 4
    assert math.isfinite(after)
    assert learnt == {"hits_at_1": 1.0, "hits_candidates": 12, "hits_contexts": 12}
    assert misled["hits_at_1"] == 0.0
    assert untrained["hits_at_1"] < 1.0
