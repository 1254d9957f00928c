"""The in-repo dialog model: a decoder-only Transformer with T5-style relative position bias.

Pure torch/transformers (no Django), so it can be imported by workers, benchmarks and notebooks.

Design choices:
- Relative position bias as in T5: one ``nn.Embedding(num_buckets, n_head)`` owned by the model,
  computed **once per forward** and shared by every layer (T5 computes it in the first layer and
  passes it on; same thing, fewer lookups). It is added to the attention scores together with the
  causal and padding masks. Attention is written out (matmul, softmax, matmul) rather than
  ``F.scaled_dot_product_attention``: the fused CPU kernels cannot give the bias its gradient,
  and SDPA's generic path is slower than these three lines (measured: a training step 13% faster,
  which puts us ahead of GPT-2 of the same size, ``make bench``).
- Gated-GELU feed-forward (T5 v1.1): ``wo(gelu(wi_0 x) * wi_1 x)``, with ``wi_0`` and ``wi_1``
  stored as one matrix ``wi`` (one matmul).
- Pre-norm with **RMSNorm** (T5 style, no bias, no mean subtraction).
- A ``PreTrainedModel`` so that ``save_pretrained``/``from_pretrained`` (safetensors) and
  ``generate`` work. In transformers 5.24 the key/value cache argument is named ``cache``
  (not ``past_key_values``): a forward that named it ``past_key_values`` would silently get None
  from ``generate`` and decode every step without context.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast


class GroundworkConfig(PretrainedConfig):
    """Sizes of the model; defaults train on 2 CPU cores in minutes (~6M parameters).

    transformers 5.24 turns config subclasses into keyword-only dataclasses: fields are annotated
    class attributes.
    """

    model_type = "groundwork"
    # transformers' generic names, read e.g. by DynamicCache(config=...) and generate
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
    }

    vocab_size: int = 8192  # BPE vocabulary incl. special tokens; size with len(tokenizer)
    d_model: int = 256  # width of the residual stream
    n_layer: int = 4  # number of Blocks
    n_head: int = 4  # attention heads; head size = d_model // n_head
    d_ff: int = 683  # gated-GELU hidden width (~8/3 d_model keeps parameters of a 4x MLP)
    relative_attention_num_buckets: int = 32  # T5's default
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket
    dropout: float = 0.0  # tiny data, few steps: no dropout by default
    layer_norm_epsilon: float = 1e-6
    initializer_range: float = 0.02  # std 1 gives huge logits and denormal floats (half speed)
    tie_word_embeddings: bool = True  # not a base field in 5.24: must be declared to tie
    use_cache: bool = True


class Attention(nn.Module):
    """Multi-head causal self-attention; position enters only through the shared bias."""

    def __init__(self, config: GroundworkConfig, layer_idx: int) -> None:
        super().__init__()
        assert config.d_model % config.n_head == 0
        self.n_head = config.n_head
        self.head_size = config.d_model // config.n_head
        self.layer_idx = layer_idx
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C), T = new tokens only
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        attend = getattr(cache, "attend", None)
        if attend is not None and not self.training:
            # A cache that attends itself (sampling's, whose rows share their prompt's keys):
            # the same attention, computed without copying the prompt to every row.
            y = attend(q, k, v, bias.to(q.dtype), self.layer_idx, self.head_size**-0.5)  # (B, nh, T, hs)
            return self.out(y.transpose(1, 2).contiguous().view(B, T, C))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)  # (B, nh, past + T, hs)
        # Attention written out: SDPA's fused kernels take no gradient for a float mask, and its
        # generic path spends ~10% of a training step checking for fully masked rows.
        scores = (q @ k.transpose(-2, -1)) * self.head_size**-0.5 + bias.to(q.dtype)  # (B, nh, T, k)
        weights = torch.softmax(scores, dim=-1)  # bf16 under autocast; the kernel sums in fp32
        if self.training and self.dropout:
            weights = F.dropout(weights, p=self.dropout)
        y = weights @ v  # (B, nh, T, hs); bias (B|1, nh, T, past + T) carries causal and padding masks
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.out(y)


class MLP(nn.Module):
    """Gated-GELU feed-forward of T5 v1.1."""

    def __init__(self, config: GroundworkConfig) -> None:
        super().__init__()
        # T5's wi_0 (gate) and wi_1 (value) as one matrix: one matmul (and one bf16 cast) not two.
        self.wi = nn.Linear(config.d_model, 2 * config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.wi(x).chunk(2, dim=-1)  # 2 x (B, T, d_ff)
        h = F.gelu(gate, approximate="tanh") * value  # (B, T, d_ff)
        return self.wo(self.dropout(h))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GroundworkConfig, layer_idx: int) -> None:
        super().__init__()
        self.norm_1 = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer_idx)
        self.norm_2 = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: Cache | None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm_1(x), bias, cache))  # (B, T, C)
        return x + self.dropout(self.mlp(self.norm_2(x)))  # (B, T, C)


class GroundworkPreTrainedModel(PreTrainedModel):
    config_class = GroundworkConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)


class GroundworkModel(GroundworkPreTrainedModel):
    """Embedding, Blocks and final norm; returns hidden states (B, T, C)."""

    def __init__(self, config: GroundworkConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.d_model)
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.n_head)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = nn.RMSNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    @staticmethod
    def _relative_position_bucket(
        relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128
    ) -> torch.Tensor:
        """Map ``key_pos - query_pos`` to a bucket id in ``[0, num_buckets)``, causal (T5's
        ``bidirectional=False``).

        Only the past is seen, so the distance is ``n = max(query_pos - key_pos, 0)``; future keys
        (masked anyway) fall in bucket 0 with distance 0. Half the buckets are exact distances
        ``0 .. num_buckets/2 - 1``; the other half grow logarithmically up to ``max_distance``,
        beyond which every distance shares the last bucket. With 32 buckets and 128: distance
        0..15 -> 0..15, 16 -> 16, 32 -> 21, 64 -> 26, >= 128 -> 31.

        Args:
            relative_position: int tensor of ``key_pos - query_pos``, any shape.
        Returns:
            long tensor of the same shape.
        """
        n = torch.clamp(-relative_position, min=0)
        max_exact = num_buckets // 2
        is_small = n < max_exact
        # clamp avoids log(0); those positions are taken from the exact branch anyway
        log_ratio = torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
        if_large = max_exact + (log_ratio * (num_buckets - max_exact)).to(torch.long)
        if_large = torch.clamp(if_large, max=num_buckets - 1)
        return torch.where(is_small, n, if_large)

    def compute_bias(
        self,
        q_len: int,
        past: int,
        attention_mask: torch.Tensor | None,
        dtype: torch.dtype,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Additive attention bias (B|1, nh, q_len, past + q_len): relative positions, causal and
        padding masks. Queries sit at ``past + arange(q_len)``: forgetting ``past`` under a cache
        would give every new token the bias of position 0.

        ``position_ids`` (B, q_len) overrides the query positions row by row, keys staying at
        ``arange(past + q_len)``: a row whose cache ends in positions it must not see (masked in
        ``attention_mask``) puts its new token right after its last real one, so it gets exactly
        the biases it would get without the masked positions (sample-and-rank scores candidates
        of different lengths from one shared cache this way)."""
        device = self.relative_attention_bias.weight.device
        index = torch.arange(past + q_len, device=device)  # (k,) where each key sits in the cache
        if position_ids is None:
            query_pos = index[None, past:, None]  # (1, q, 1)
            key_pos = index[None, None, :]  # (1, 1, k)
        else:
            query_pos = position_ids.to(device)[:, :, None]  # (B, q, 1)
            key_pos = torch.cat([index[:past].expand(len(query_pos), past), query_pos[:, :, 0]], dim=1)[
                :, None
            ]
        buckets = self._relative_position_bucket(
            key_pos - query_pos,
            num_buckets=self.config.relative_attention_num_buckets,
            max_distance=self.config.relative_attention_max_distance,
        )  # (B|1, q, k)
        bias = self.relative_attention_bias(buckets).permute(0, 3, 1, 2).to(dtype)  # (B|1,nh,q,k)
        masked = (index[None, :] > index[past:, None])[None, None]  # (1, 1, q, k): causal, by cache index
        if attention_mask is not None:
            # (B, k) with 0 at padding; finfo.min instead of -inf keeps fully masked pad rows finite
            masked = masked | (attention_mask[:, None, None, -(past + q_len) :] == 0)  # (B,1,q,k)
        return bias.masked_fill(masked, torch.finfo(dtype).min)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        past = cache.get_seq_length() if cache is not None else 0  # before layers update it
        x = self.dropout(self.embed_tokens(input_ids))  # (B, T, C)
        bias = self.compute_bias(input_ids.shape[1], past, attention_mask, x.dtype, position_ids)
        for block in self.layers:
            x = block(x, bias, cache)  # (B, T, C)
        return self.norm(x)  # (B, T, C)


class GroundworkForCausalLM(GroundworkPreTrainedModel, GenerationMixin):
    """Language-model head over ``GroundworkModel``; the head is tied to the token embedding."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # dict in 5.x

    def __init__(self, config: GroundworkConfig) -> None:
        super().__init__(config)
        self.model = GroundworkModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, vocab); with ``labels`` (B, T) the next-token loss, shifted here like HF,
        ignoring positions labelled -100. ``generate`` passes ``cache`` (a ``DynamicCache``)."""
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None and not self.training:
            cache = DynamicCache(config=self.config)
        hidden = self.model(input_ids, attention_mask=attention_mask, cache=cache, position_ids=position_ids)
        logits = self.lm_head(hidden)  # (B, T, vocab)
        loss = None
        if labels is not None:
            # Shift the labels, not the logits: slicing (B, T, vocab) logits would copy them twice.
            shifted = F.pad(labels, (0, 1), value=-100)[:, 1:].to(logits.device)  # (B, T)
            loss = F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


def model_init(config: GroundworkConfig, *, seed: int) -> GroundworkForCausalLM:
    """A new model whose initial weights are a function of ``config`` and ``seed`` only.

    The weights are drawn under a forked RNG seeded with ``seed``: whatever the process drew
    before (a worker that trained other jobs, a test) does not change them, and drawing them does
    not change what the process draws next. Same config and seed, same ``state_dict``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GroundworkForCausalLM(config)


AutoConfig.register(GroundworkConfig.model_type, GroundworkConfig, exist_ok=True)
AutoModelForCausalLM.register(GroundworkConfig, GroundworkForCausalLM, exist_ok=True)
