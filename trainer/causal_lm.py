"""Any causal language model the trainer trains and serves: Groundwork's own
(``trainer.modeling``) or an imported transformers one (``ModelVersion.Kind.IMPORTED``, copied in
by ``trainer.services.model_imports``). Pure torch/transformers (no Django).

What differs between them, and is decided here once:

- Loading: every version is loaded with ``AutoModelForCausalLM`` from its own folder, offline
  (``local_files_only``) and without remote code, in float32 (what training and the CPU expect).
  An imported version's tokenizer holds Groundwork's special tokens (added at import,
  ``add_groundwork_tokens``) while its weights do not yet: ``load`` resizes the embeddings to the
  tokenizer (``resize_token_embeddings``; the new rows are drawn around the mean of the existing
  ones, seeded, so the same folder always loads to the same weights). The first fine-tune then
  saves them at their new size.
- Positions: ours has relative positions only, so sampling's left padding changes nothing and
  ``position_ids`` are cache indices (``GroundworkModel.compute_bias``); GPT-2, Llama and most
  others have absolute or rotary positions, which must be given as each row's real position.
- Scoring by cache reuse (``trainer.sampling``) needs ``position_ids`` and a cache whose layers
  keep every position (``DynamicLayer``, not a sliding window): ``reuses_cache``. Other models are
  scored by encoding each sequence with its attribute token, which gives the same probabilities.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache, DynamicLayer

from trainer import tokenizer as tokenizers
from trainer.hyperparameters import MODEL_SIZE_BOUNDS
from trainer.modeling import GroundworkConfig  # registers "groundwork" with AutoModelForCausalLM

RESIZE_SEED = 0
# Config fields a version records (``ModelVersion.config``) for a model that is not ours.
CONFIG_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def add_groundwork_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Add Groundwork's special tokens (``trainer.tokenizer.SPECIAL_TOKENS``) that ``tokenizer``
    lacks, as special tokens (never split, one id each), and ``<pad>`` as its pad token when it
    has none; returns the tokens added. Its own tokens (its end of text, its unknown token) stay
    as they are: the formats use Groundwork's ``<eos>``."""
    vocabulary = tokenizer.get_vocab()
    added = [token for token in tokenizers.SPECIAL_TOKENS if token not in vocabulary]
    tokenizer.add_tokens(added, special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizers.PAD
    tokenizers.check(tokenizer)
    return added


def load(path: str | Path, tokenizer: PreTrainedTokenizerBase) -> Any:
    """The model saved in ``path``, its embeddings sized for ``tokenizer`` (``len(tokenizer)``)."""
    model = AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, trust_remote_code=False, dtype=torch.float32
    )
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        # Seeded under a forked RNG: the same folder loads to the same weights, and loading does
        # not change what the process draws next (as ``modeling.model_init``).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RESIZE_SEED)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def is_groundwork(model: Any) -> bool:
    """Whether ``model`` (or the model a test wraps, which keeps its ``config``) is ours."""
    return getattr(getattr(model, "config", None), "model_type", None) == GroundworkConfig.model_type


def accepts_position_ids(model: Any) -> bool:
    """Whether the model's decoder takes ``position_ids`` (GPT-2 and Llama do)."""
    if is_groundwork(model):
        return True
    decoder = getattr(model, "base_model", model)
    try:
        return "position_ids" in inspect.signature(decoder.forward).parameters
    except (TypeError, ValueError):
        return False


def reuses_cache(model: Any) -> bool:
    """Whether sample-and-rank may score from the sampling cache: ours always; another model when
    it takes ``position_ids`` and its cache keeps every position (no sliding window)."""
    if is_groundwork(model):
        return True
    if not accepts_position_ids(model):
        return False
    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def device_of(model: Any) -> torch.device:
    """Where the model's weights are (``model.device``; a wrapping module's first parameter's)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def hidden_states(model: Any, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """The decoder's final hidden states (B, T, C), what the head reads: ours returns them, a
    transformers model an output whose ``last_hidden_state`` they are."""
    out = model.base_model(input_ids, **kwargs)
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


def config_record(config: Any) -> dict[str, Any]:
    """What a model version records of its config (``ModelVersion.config``): ours, its sizes;
    another model, its type and the generic sizes it has."""
    if config.model_type == GroundworkConfig.model_type:
        return {field: getattr(config, field) for field in ("vocab_size", *MODEL_SIZE_BOUNDS)}
    record = {"architectures": list(getattr(config, "architectures", None) or [])}
    for field in CONFIG_FIELDS:
        value = getattr(config, field, None)
        if value is not None:
            record[field] = value
    return record
