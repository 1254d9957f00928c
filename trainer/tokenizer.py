"""The Groundwork tokenizer: a byte-level BPE with named special tokens (METHOD.md §8).

Why byte-level BPE (HF ``tokenizers``) rather than a SentencePiece-style BPE: every string,
including emoji, URLs and any script, maps to bytes the base alphabet already covers, so there is
no unknown token in practice and ``decode(encode(text)) == text`` exactly. That exactness is what
lets the format tests compare decoded examples to their documented rendering character for
character. A SentencePiece BPE would need ``byte_fallback`` for the same guarantee and rewrites
spaces to ``▁``.

Special tokens (``SPECIAL_TOKENS``) are added to the vocabulary before training, first, so their
ids are stable and small (``<pad>`` is 0, ``<eos>`` 1, ``<unk>`` 2). Each encodes to exactly one
id and is never split or merged with text. The tokenizer is wrapped as a transformers
``PreTrainedTokenizerFast`` (alias ``TokenizersBackend``) with the non-core tokens in
``extra_special_tokens``; size embeddings with ``len(tokenizer)``. No BOS is added.

This module does not import Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD = "<pad>"
EOS = "<eos>"
UNK = "<unk>"
USER = "<user>"
MODEL = "<model>"
SENTINEL = "<sentinel>"  # METHOD.md's RESPONSE marker
ATTRIBUTES = ("SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE", "CORRECT")
ATTRIBUTE_TOKENS = {name: f"<{name}>" for name in ATTRIBUTES}
RATING_TOKENS = {0: "<0>", 1: "<1>"}
TS = "<TS>"  # research speaker: a query to the toolset
RESEARCH_USER = "<User>"  # research speaker: the grounded response sent to the user
SNIPPET = "<snippet>"
SPEAKER_TOKENS = {"user": USER, "model": MODEL}

SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    EOS,
    UNK,
    USER,
    MODEL,
    SENTINEL,
    *ATTRIBUTE_TOKENS.values(),
    *RATING_TOKENS.values(),
    TS,
    RESEARCH_USER,
    SNIPPET,
)


def _wrap(backend: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in (PAD, EOS, UNK)],
        clean_up_tokenization_spaces=False,
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and return it as a transformers fast tokenizer.

    ``vocab_size`` counts the special tokens and the 256-byte base alphabet; on a small corpus the
    trained vocabulary may end up smaller (no merge is invented). ``len(tokenizer)`` is the size to
    give the embedding.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)}")
    backend = Tokenizer(models.BPE(unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = _wrap(backend)
    check(tokenizer)
    return tokenizer


def check(tokenizer: PreTrainedTokenizerFast) -> None:
    """Raise ValueError unless every special token encodes to one id below ``len(tokenizer)``."""
    for token in SPECIAL_TOKENS:
        ids = tokenizer.encode(token, add_special_tokens=False)
        if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != token or ids[0] >= len(tokenizer):
            raise ValueError(f"special token {token!r} does not encode to a single id: {ids}")


def save(tokenizer: PreTrainedTokenizerFast, directory: str | Path) -> Path:
    """Write the tokenizer to ``directory`` (``save_pretrained``) and return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    return directory


def load(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by :func:`save` and check its special tokens."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(directory))
    check(tokenizer)
    return tokenizer


def special_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The single id of a special token (ValueError if it is not one)."""
    if token not in SPECIAL_TOKENS:
        raise ValueError(f"{token!r} is not a special token")
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != UNK):
        raise ValueError(f"tokenizer has no id for {token!r}")
    return token_id
