"""The key/value caches sampling and scoring read (``trainer.sampling``): ``SharedPromptCache``,
sampling's own for our model, whose candidates share their prompt's keys and values;
``OneFreePosition`` and ``OneMoreToken``, read-only views for the scoring's one-token forwards
over a ``DynamicCache`` (any model's) or a ``SharedPromptCache``; and ``attend_shared``, the
attention by prompt both use. Every buffer here is made from the tensors it holds
(``new_empty``), so it lives on the model's device."""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class _FreePositionLayer(DynamicLayer):
    """One layer of ``OneFreePosition``: the source layer's keys and values, copied on the first
    forward into buffers one position longer, whose last position every forward overwrites."""

    def __init__(self, source: Any, length: int) -> None:
        super().__init__()
        self.source, self.length = source, length
        self.is_initialized = True

    def get_seq_length(self) -> int:
        return self.length

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is None or self.values is None:
            past_keys, past_values = self.source.keys, self.source.values  # (n, nh, length, hs)
            n, heads, _, size = past_keys.shape
            self.keys = past_keys.new_empty((n, heads, self.length + 1, size))
            self.values = past_values.new_empty((n, heads, self.length + 1, past_values.shape[-1]))
            self.keys[:, :, : self.length] = past_keys
            self.values[:, :, : self.length] = past_values
        self.keys[:, :, self.length :] = key_states  # (n, nh, 1, hs)
        self.values[:, :, self.length :] = value_states
        return self.keys, self.values


class OneFreePosition(Cache):
    """A read-only view of a ``DynamicCache`` (or a ``SharedPromptCache``'s copies) for one-token
    forwards that must not stay in it: per layer, the cached keys and values copied once into a
    buffer one position longer, whose last position each forward overwrites with its own token's.
    The cache's length, as the model asks for it, stays the cached one. (``DynamicCache.update``
    would copy the whole cache on every forward, and ``crop`` would be needed after each.)

    A transformers ``Cache``, so that a transformers model (GPT-2, Llama) sizes its attention mask
    from it (``get_mask_sizes``: the cached length and the one token) as from its own caches."""

    def __init__(self, cache: DynamicCache | SharedPromptCache) -> None:
        self.cache = cache
        self.length = cache.get_seq_length()
        super().__init__(layers=[_FreePositionLayer(layer, self.length) for layer in cache.layers])


class _Layer:
    """One layer of a ``SharedPromptCache``: the prompts' keys and values, one row per prompt
    (B, nh, W, hs), and the sampled tokens', per prompt and candidate (B, nh, n, capacity, hs),
    in buffers written in place."""

    def __init__(self) -> None:
        self.prompt: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sampled: tuple[torch.Tensor, torch.Tensor] | None = None
        self.length = 0  # sampled positions filled
        self.repeats = 1
        self.expanded = False  # each prompt row stands for its ``repeats`` candidates now

    @property
    def keys(self) -> torch.Tensor:
        """Every row's keys (B*n, nh, W + t, hs), prompt then sampled tokens: a copy, for the
        scoring (once)."""
        return self._whole(0)

    @property
    def values(self) -> torch.Tensor:
        return self._whole(1)

    def _whole(self, which: int) -> torch.Tensor:
        assert self.prompt is not None
        prompt = self.prompt[which].repeat_interleave(self.repeats, dim=0)
        if self.sampled is None:
            return prompt
        sampled = self.sampled[which][:, :, :, : self.length]  # (B, nh, n, t, hs)
        prompts, heads, n, steps, size = sampled.shape
        rows = sampled.permute(0, 2, 1, 3, 4).reshape(prompts * n, heads, steps, size)
        return torch.cat([prompt, rows], dim=2)


class SharedPromptCache:
    """The sampling's key/value cache. Every candidate of a prompt shares that prompt's keys and
    values, kept once per prompt, not copied to its ``n`` rows; the sampled tokens' go into
    buffers allocated once (``capacity`` positions) and written in place. Attention over it
    (``attend``, which the model's attention calls instead of its own when the cache has it) reads
    a prompt's keys once for all its candidates. Against a ``DynamicCache`` (prompt copied to every
    row, the whole cache copied again at every token by ``torch.cat``) this saves most of the
    memory traffic of sampling, which dominated a batch of 16 contexts × 16 candidates.

    What else the model and the scoring ask of a cache: ``get_seq_length``, ``update``,
    ``batch_repeat_interleave`` (the prompts' rows become their candidates'), and
    ``layers[i].keys``/``.values`` (copies, for ``OneFreePosition``)."""

    def __init__(self, capacity: int, layers: int) -> None:
        self.capacity = capacity
        self.layers = [_Layer() for _ in range(layers)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        layer = self.layers[layer_idx]
        return (0 if layer.prompt is None else layer.prompt[0].shape[2]) + layer.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        """From now on each prompt row stands for ``repeats`` candidate rows (row ``b * n + i``
        is candidate ``i`` of prompt ``b``)."""
        for layer in self.layers:
            layer.repeats, layer.expanded = repeats, True

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' keys and values (``_store``) and return every row's (copies)."""
        layer = self._store(keys, values, layer_idx)
        return layer.keys, layer.values

    def _store(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int) -> _Layer:
        """The prompts' keys and values (before the repeat, once), then the sampled tokens'
        ((B*n, nh, T, hs) rows, kept by prompt)."""
        layer = self.layers[layer_idx]
        if not layer.expanded:
            if layer.prompt is not None:
                raise ValueError("a prompt is encoded once: sample its candidates after the repeat")
            layer.prompt = (keys, values)
            return layer
        assert layer.prompt is not None
        _, heads, steps, size = keys.shape
        prompts, n = layer.prompt[0].shape[0], layer.repeats
        if layer.sampled is None:
            shape = (prompts, heads, n, self.capacity, size)
            layer.sampled = (keys.new_empty(shape), values.new_empty(shape))
        end = layer.length + steps
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} sampled positions; {end} were asked for")
        for buffer, new in zip(layer.sampled, (keys, values), strict=True):
            buffer[:, :, :, layer.length : end] = new.view(prompts, n, heads, steps, size).transpose(1, 2)
        layer.length = end
        return layer

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,
        layer_idx: int,
        scale: float,
    ) -> torch.Tensor:
        """``softmax(q kᵀ · scale + bias) v`` over every row's prompt and sampled tokens, as the
        model's attention computes it, with each prompt's keys and values read once for its rows.
        q, k, v: (rows, nh, T, hs); bias: (rows|1, nh, T, past + T), whose prompt part is the same
        for a prompt's rows (its padding and the positions). Returns (rows, nh, T, hs)."""
        layer = self._store(k, v, layer_idx)
        if not layer.expanded:  # the prompts themselves
            assert layer.prompt is not None
            keys, values = layer.prompt
            weights = torch.softmax((q @ keys.transpose(-2, -1)) * scale + bias, dim=-1)
            return weights @ values
        assert layer.prompt is not None
        assert layer.sampled is not None
        sampled_keys = layer.sampled[0][:, :, :, : layer.length]  # (B, nh, n, t, hs)
        sampled_values = layer.sampled[1][:, :, :, : layer.length]
        return attend_shared(q, layer.prompt, (sampled_keys, sampled_values), bias, scale)


def attend_shared(
    q: torch.Tensor,
    prompt: tuple[torch.Tensor, torch.Tensor],
    sampled: tuple[torch.Tensor, torch.Tensor],
    bias: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """``softmax(q kᵀ · scale + bias) v`` for rows that share their prompt's keys and values:
    q (rows, nh, T, hs), rows = B prompts × n candidates; ``prompt`` keys and values (B, nh, W, hs),
    read once for a prompt's rows; ``sampled`` the rows' own (B, nh, n, t, hs); bias (rows|1, nh,
    T, W + t): each row's own (in scoring, rows of a prompt stand at different positions, so their
    relative position bias to the prompt differs). Returns (rows, nh, T, hs)."""
    prompt_keys, prompt_values = prompt
    sampled_keys, sampled_values = sampled
    rows, heads, steps, size = q.shape
    prompts, width = prompt_keys.shape[0], prompt_keys.shape[2]
    n = rows // prompts
    # Everything by prompt: (B, nh, n, T, ·).
    grouped_q = (q * scale).view(prompts, n, heads, steps, size).transpose(1, 2)  # (B, nh, n, T, hs)
    if bias.shape[0] == 1:
        bias_prompt = bias[:, :, None, :, :width]  # (1, nh, 1, T, W)
        bias_sampled = bias[:, :, None, :, width:]  # (1, nh, 1, T, t)
    else:
        by_prompt = bias.view(prompts, n, heads, steps, -1).transpose(1, 2)  # (B, nh, n, T, W + t)
        bias_prompt = by_prompt[:, :, :, :, :width]  # (B, nh, n, T, W)
        bias_sampled = by_prompt[:, :, :, :, width:]  # (B, nh, n, T, t)
    on_prompt = grouped_q.reshape(prompts, heads, n * steps, size) @ prompt_keys.transpose(-2, -1)
    on_prompt = on_prompt.view(prompts, heads, n, steps, width) + bias_prompt  # (B, nh, n, T, W)
    on_sampled = grouped_q @ sampled_keys.transpose(-2, -1) + bias_sampled  # (B, nh, n, T, t)
    # One softmax over both parts, without joining them.
    top = torch.maximum(on_prompt.amax(-1, keepdim=True), on_sampled.amax(-1, keepdim=True))
    on_prompt = (on_prompt - top).exp_()
    on_sampled = (on_sampled - top).exp_()
    total = on_prompt.sum(-1, keepdim=True) + on_sampled.sum(-1, keepdim=True)  # (B, nh, n, T, 1)
    from_prompt = on_prompt.view(prompts, heads, n * steps, width) @ prompt_values  # (B, nh, n*T, hs)
    y = (from_prompt.view(prompts, heads, n, steps, size) + on_sampled @ sampled_values) / total
    return y.transpose(1, 2).reshape(rows, heads, steps, size)  # (B*n, nh, T, hs)


class OneMoreToken:
    """``OneFreePosition`` for a ``SharedPromptCache``: each scoring forward's one token attends
    to its row's prompt (read once per prompt, never copied to the rows), its sampled tokens and
    itself, through the same shared attention as sampling; the cache is not changed."""

    def __init__(self, cache: SharedPromptCache) -> None:
        self.cache = cache
        self.length = cache.get_seq_length()

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,
        layer_idx: int,
        scale: float,
    ) -> torch.Tensor:
        layer = self.cache.layers[layer_idx]
        assert layer.prompt is not None
        prompts, n = layer.prompt[0].shape[0], layer.repeats
        _, heads, _, size = k.shape
        own = [
            k.view(prompts, n, heads, 1, size).transpose(1, 2),
            v.view(prompts, n, heads, 1, size).transpose(1, 2),
        ]
        if layer.sampled is not None:  # (B, nh, n, t, hs), then the token's own position
            own = [
                torch.cat([past[:, :, :, : layer.length], new], dim=3)
                for past, new in zip(layer.sampled, own, strict=True)
            ]
        return attend_shared(q, layer.prompt, (own[0], own[1]), bias, scale)
