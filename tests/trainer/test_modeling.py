"""The in-repo dialog model: save/load, relative position buckets, cache, generate, loss, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.cache_utils import DynamicCache
from transformers.models.t5.modeling_t5 import T5Attention

from trainer.modeling import GroundworkConfig, GroundworkForCausalLM, GroundworkModel, model_init

bucket = GroundworkModel._relative_position_bucket


def tiny_config(**overrides: object) -> GroundworkConfig:
    sizes = {"vocab_size": 100, "d_model": 32, "n_layer": 2, "n_head": 2, "d_ff": 64}
    return GroundworkConfig(**(sizes | overrides))


@pytest.fixture
def model() -> GroundworkForCausalLM:
    torch.manual_seed(0)
    m = GroundworkForCausalLM(tiny_config()).eval()
    # random bias so that a wrong position offset is visible (zeros would hide it)
    with torch.no_grad():
        m.model.relative_attention_bias.weight.normal_(0.0, 1.0)
    return m


def test_save_and_load_give_identical_logits(model: GroundworkForCausalLM, tmp_path: Path) -> None:
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(1))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "groundwork"

    for loaded in (
        GroundworkForCausalLM.from_pretrained(tmp_path),
        AutoModelForCausalLM.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded, GroundworkForCausalLM)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_head_is_tied_to_the_embedding(model: GroundworkForCausalLM, tmp_path: Path) -> None:
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path)
    # one copy on disk
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")


def test_relative_position_bucket_hand_values() -> None:
    # key_pos - query_pos; causal: the past is negative, the future falls in bucket 0
    relative = torch.tensor([0, -1, -15, -16, -32, -64, -128, -1000, 5])
    # 16 exact buckets, then 16 + floor(log(n / 16) / log(128 / 16) * 16), capped at 31
    expected = torch.tensor([0, 1, 15, 16, 21, 26, 31, 31, 0])
    assert torch.equal(bucket(relative, num_buckets=32, max_distance=128), expected)
    t5 = T5Attention._relative_position_bucket(
        torch.arange(-300, 5), bidirectional=False, num_buckets=32, max_distance=128
    )
    assert torch.equal(bucket(torch.arange(-300, 5), 32, 128), t5)


def test_relative_position_bucket_is_monotonic_in_distance() -> None:
    buckets = bucket(-torch.arange(0, 500), num_buckets=32, max_distance=128)
    assert (buckets[1:] >= buckets[:-1]).all()
    assert buckets.min() == 0
    assert buckets.max() == 31


def test_incremental_decoding_with_cache_matches_full_forward(model: GroundworkForCausalLM) -> None:
    ids = torch.randint(0, 100, (2, 14), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        steps = [model(ids[:, :6], cache=cache).logits]  # prefill
        steps.append(model(ids[:, 6:9], cache=cache).logits)  # a chunk: causal mask under past
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(9, 14)]
    assert cache.get_seq_length() == 14
    assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-4


def test_dropping_the_cache_offset_would_differ(model: GroundworkForCausalLM) -> None:
    """Negative control: a bias that forgets ``past`` (queries at 0..q-1) gives other logits."""
    ids = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(3))
    inner = model.model

    def bias_without_offset(
        q_len: int, past: int, attention_mask: object, dtype: torch.dtype, position_ids: object = None
    ):
        key_pos = torch.arange(past + q_len)[None, :]
        query_pos = torch.arange(q_len)[:, None]  # the bug: no `past +`
        buckets = bucket(key_pos - query_pos, 32, 128)
        bias = inner.relative_attention_bias(buckets).permute(2, 0, 1)[None].to(dtype)
        return bias.masked_fill(key_pos > query_pos + past, torch.finfo(dtype).min)

    def decode(m: GroundworkForCausalLM) -> torch.Tensor:
        cache = DynamicCache(config=m.config)
        out = [m(ids[:, :8], cache=cache).logits]
        out += [m(ids[:, t : t + 1], cache=cache).logits for t in range(8, 12)]
        return torch.cat(out, dim=1)

    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        right = decode(model)
        inner.compute_bias = bias_without_offset  # instance attribute shadows the method
        wrong = decode(model)
    assert (right - full).abs().max() < 1e-4
    assert (wrong[:, 8:] - full[:, 8:]).abs().max() > 1e-2


def test_left_padding_does_not_change_the_logits(model: GroundworkForCausalLM) -> None:
    """Relative positions make the logits independent of how many pads precede the tokens."""
    ids = torch.randint(1, 100, (1, 7), generator=torch.Generator().manual_seed(4))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 3), torch.ones(1, 7)], dim=1).long()
    with torch.no_grad():
        plain = model(ids).logits
        with_pads = model(padded, attention_mask=mask).logits[:, 3:]
    assert (plain - with_pads).abs().max() < 1e-4


def test_generate_greedy_matches_a_manual_loop(model: GroundworkForCausalLM) -> None:
    prompt = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        generated = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            max_new_tokens=5,
            pad_token_id=0,
        )
        manual = prompt
        for _ in range(5):
            next_id = model(manual, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            manual = torch.cat([manual, next_id], dim=1)
    assert generated.shape == (2, 11)
    assert torch.equal(generated, manual)


def test_loss_ignores_positions_labelled_minus_100(model: GroundworkForCausalLM) -> None:
    ids = torch.randint(0, 100, (2, 10), generator=torch.Generator().manual_seed(6))
    labels = ids.clone()
    labels[:, :5] = -100  # a prompt: loss on the response only
    with torch.no_grad():
        out = model(ids, labels=labels)
        # the model shifts: logits at t predict labels at t + 1
        expected = F.cross_entropy(out.logits[:, 4:-1].reshape(-1, 100), ids[:, 5:].reshape(-1))
        other = ids.clone()
        other[:, :5] = (other[:, :5] + 1) % 100  # different tokens where the labels are ignored
        labels_other = other.clone()
        labels_other[:, :5] = -100
        out_other = model(ids, labels=labels_other)
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert torch.allclose(out.loss, out_other.loss)


def test_a_few_adamw_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = GroundworkForCausalLM(tiny_config()).train()
    ids = torch.arange(10).repeat(4)[None].repeat(4, 1)  # (4, 40): 0..9 repeated
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied after training


def test_position_ids_let_rows_of_one_cache_end_at_different_lengths(model: GroundworkForCausalLM) -> None:
    """Sample-and-rank scoring: two rows share a cache of 10 positions, but row 0 really ends at 6
    (its positions 6..9 are masked). Its next token at position 6 gets the logits of an exact
    re-encoding of its 6 tokens plus that token."""
    ids = torch.randint(1, 100, (2, 10), generator=torch.Generator().manual_seed(5))
    extra = torch.tensor([[7], [9]])
    lengths = torch.tensor([6, 10])
    with torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(ids, cache=cache)
        mask = (torch.arange(11)[None, :] < lengths[:, None]) | (torch.arange(11)[None, :] == 10)
        shared = model(extra, cache=cache, attention_mask=mask.long(), position_ids=lengths[:, None]).logits
        exact_0 = model(torch.cat([ids[:1, :6], extra[:1]], dim=1), use_cache=False).logits[:, -1]
        exact_1 = model(torch.cat([ids[1:, :10], extra[1:]], dim=1), use_cache=False).logits[:, -1]
    assert (shared[0, -1] - exact_0[0]).abs().max() < 1e-4
    assert (shared[1, -1] - exact_1[0]).abs().max() < 1e-4


def test_a_seed_gives_the_same_initial_weights_whatever_the_global_rng_did() -> None:
    torch.manual_seed(123)
    first = model_init(tiny_config(), seed=7).state_dict()
    torch.rand(1000)  # a worker that drew other numbers in between
    again = model_init(tiny_config(), seed=7).state_dict()
    other = model_init(tiny_config(), seed=8).state_dict()

    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["model.embed_tokens.weight"], other["model.embed_tokens.weight"])
    # Drawing the weights leaves the global generator where it was.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model_init(tiny_config(), seed=7)
    assert torch.equal(torch.rand(3), expected)
