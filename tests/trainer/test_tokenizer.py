"""The byte-level BPE tokenizer: special tokens are single ids, save/load round-trips."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast, TokenizersBackend

from trainer.tokenizer import SPECIAL_TOKENS, load, save, special_id, train_tokenizer

SENTENCES = [
    "What's up?",
    "Not much. How about you?",
    "I just got back from the museum.",
    "Which exhibition did you see?",
    "Rosalie Gascoigne's sculptures, made from found objects.",
    "Did you know she inspired Miró?",
    "Oh wow, her life course is so inspiring.",
    "She practised Japanese flower arrangement before turning to sculpture.",
    "What is the tallest mountain in the world?",
    "Mount Everest is the tallest mountain above sea level.",
    "Do you like jazz or classical music?",
    "I like both, but jazz a little more.",
    "The weather is lovely today, isn't it?",
    "Yes, sunny and warm, perfect for a walk.",
    "Can you recommend a good book?",
    "Try The Left Hand of Darkness by Ursula K. Le Guin.",
    "How many legs does a spider have?",
    "A spider has eight legs.",
    "Tell me a joke.",
    "Why did the scarecrow win an award? He was outstanding in his field.",
    "Where is the Eiffel Tower?",
    "The Eiffel Tower is in Paris, France.",
    "What do you think of Rosalie Gascoigne's sculptures?",
    "They're great, and I love how her work changed across her life.",
    "Miró and Gascoigne",
    "Gascoigne had been a practitioner of ikebana before she turned to sculpture.",
    "I'm doing well, thanks for asking.",
    "See https://en.wikipedia.org/wiki/Rosalie_Gascoigne for more.",
    "Emoji are fine too 🙂 and so is naïve café.",
    "Let's talk about something else.",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(SENTENCES * 3, vocab_size=300)


def test_is_a_transformers_fast_tokenizer(tokenizer: PreTrainedTokenizerFast) -> None:
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert isinstance(tokenizer, TokenizersBackend)
    assert tokenizer.pad_token == "<pad>"
    assert tokenizer.eos_token == "<eos>"
    assert tokenizer.unk_token == "<unk>"
    assert 256 + len(SPECIAL_TOKENS) <= len(tokenizer) <= 300


def test_special_token_names() -> None:
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)
    for token in (
        "<user>",
        "<model>",
        "<sentinel>",
        "<SENSIBLE>",
        "<SPECIFIC>",
        "<INTERESTING>",
        "<UNSAFE>",
        "<CORRECT>",
        "<0>",
        "<1>",
        "<TS>",
        "<User>",
        "<snippet>",
        "<pad>",
        "<eos>",
        "<unk>",
    ):
        assert token in SPECIAL_TOKENS


@pytest.mark.parametrize("token", SPECIAL_TOKENS)
def test_special_token_is_one_id_and_round_trips(tokenizer: PreTrainedTokenizerFast, token: str) -> None:
    ids = tokenizer.encode(token, add_special_tokens=False)
    assert len(ids) == 1
    assert ids[0] == special_id(tokenizer, token)
    assert ids[0] < len(tokenizer)
    assert tokenizer.decode(ids) == token
    assert tokenizer.convert_ids_to_tokens(ids[0]) == token
    # Never split or merged with neighbouring text either.
    around = tokenizer.encode(f"a{token}b", add_special_tokens=False)
    assert ids[0] in around
    assert tokenizer.decode(around) == f"a{token}b"


def test_special_ids_are_distinct_and_stable(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = [special_id(tokenizer, t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.pad_token_id == 0
    assert tokenizer.eos_token_id == 1
    assert max(ids) < len(tokenizer)


def test_no_bos_is_added(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.encode(" not much.") == tokenizer.encode(" not much.", add_special_tokens=False)


@pytest.mark.parametrize(
    "text",
    ["What's up?", " Miró and Gascoigne", "Emoji 🙂 naïve", "never seen: Ωμέγα 漢字 \t tabs\nlines", ""],
)
def test_text_round_trips_exactly(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids


def test_save_load_round_trip(tokenizer: PreTrainedTokenizerFast, tmp_path) -> None:
    directory = save(tokenizer, tmp_path / "tok")
    assert (directory / "tokenizer.json").exists()
    loaded = load(directory)
    assert isinstance(loaded, TokenizersBackend)
    assert len(loaded) == len(tokenizer)
    text = "<user> What's up?<sentinel> not much.<SENSIBLE><1><eos>" + " ".join(SENTENCES)
    assert loaded.encode(text) == tokenizer.encode(text)
    for token in SPECIAL_TOKENS:
        assert special_id(loaded, token) == special_id(tokenizer, token)
    assert set(loaded.all_special_tokens) == set(SPECIAL_TOKENS)


def test_training_is_deterministic() -> None:
    a = train_tokenizer(SENTENCES, vocab_size=300)
    b = train_tokenizer(SENTENCES, vocab_size=300)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()


def test_vocab_too_small_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(SENTENCES, vocab_size=100)


def test_special_id_refuses_plain_strings(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="not a special token"):
        special_id(tokenizer, "hello")
