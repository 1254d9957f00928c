"""``trainer.sizing`` against the real model: the parameter count of every preset, the FLOPs
convention, and the activation memory torch really keeps for backward. No database."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from trainer import sizing
from trainer.hyperparameters import (
    DEFAULT_PRESET,
    MODEL_PRESETS,
    HyperparameterError,
    model_sizes_resolve,
)
from trainer.modeling import GroundworkConfig, GroundworkForCausalLM


def config_of(preset: str, **overrides: Any) -> GroundworkConfig:
    return GroundworkConfig(**{**MODEL_PRESETS[preset], **overrides})


def test_the_default_preset_is_the_models_defaults() -> None:
    """A job that names no preset trains GroundworkConfig's defaults: they are "tiny"."""
    defaults = GroundworkConfig()
    assert DEFAULT_PRESET == "tiny"
    assert {name: getattr(defaults, name) for name in MODEL_PRESETS["tiny"]} == MODEL_PRESETS["tiny"]
    assert {name: getattr(defaults, name) for name in sizing.DEFAULTS} == sizing.DEFAULTS


@pytest.mark.parametrize("preset", list(MODEL_PRESETS))
def test_parameter_count_is_the_models(preset: str) -> None:
    """Each preset built for real (base on the meta device: no memory, no time) has exactly the
    parameters ``parameter_count`` says, tied weights counted once."""
    config = config_of(preset)
    device = "meta" if preset == "base" else "cpu"
    with torch.device(device):
        model = GroundworkForCausalLM(config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sizing.parameter_count(config) == sum(p.numel() for p in model.parameters())
    assert sizing.parameter_count(dict(MODEL_PRESETS[preset], vocab_size=8192)) == sizing.parameter_count(
        config
    )


def test_other_vocabularies_and_buckets_count_too() -> None:
    config = GroundworkConfig(vocab_size=1000, d_model=48, n_layer=3, n_head=6, d_ff=100)
    config.relative_attention_num_buckets = 16
    model = GroundworkForCausalLM(config)
    assert sizing.parameter_count(config) == sum(p.numel() for p in model.parameters())


def test_the_presets_span_the_documented_sizes() -> None:
    counts = {
        name: sizing.parameter_count({**sizing.DEFAULTS, **sizes}) for name, sizes in MODEL_PRESETS.items()
    }
    assert 4.5e6 < counts["tiny"] < 6.5e6
    assert 30e6 <= counts["small"] <= 45e6
    assert 110e6 <= counts["base"] <= 130e6
    for sizes in MODEL_PRESETS.values():
        assert sizes["d_model"] % sizes["n_head"] == 0


def test_flops_per_token_follows_the_6n_plus_attention_convention() -> None:
    """6 FLOPs per matmul weight (the tied head once, not the norms or the bias table) and
    12 · n_layer · d_model · T for attention's two T × T matmuls, forward and backward."""
    config = config_of("tiny")
    d, layers, vocab, d_ff = 256, 4, 8192, 683
    matmul_weights = vocab * d + layers * (3 * d * d + d * d + 2 * d * d_ff + d_ff * d)
    assert sizing.matmul_parameter_count(config) == matmul_weights
    norms_and_bias = (2 * layers + 1) * d + 32 * 4
    assert sizing.matmul_parameter_count(config) == sizing.parameter_count(config) - norms_and_bias
    assert sizing.flops_per_token(config, 256) == 6 * matmul_weights + 12 * layers * d * 256
    assert sizing.flops_per_token(config, 512) - sizing.flops_per_token(config, 256) == 12 * layers * d * 256


def _saved_bytes(config: GroundworkConfig, batch: int, seq_len: int, *, bf16: bool) -> tuple[int, int]:
    """Bytes of the floating-point tensors autograd keeps from one forward (each storage once):
    the parameters' own storages left out; (activations, bf16 copies of weights)."""
    torch.manual_seed(0)
    model = GroundworkForCausalLM(config)
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    casts = [p.detach().to(torch.bfloat16) for p in model.parameters() if p.dim() == 2]

    def is_cast(tensor: torch.Tensor) -> bool:
        """A bf16 copy of a weight (or its transpose), which autocast keeps for backward."""
        if tensor.dtype != torch.bfloat16 or tensor.dim() != 2:
            return False
        return any(
            candidate.shape == weight.shape and torch.equal(candidate, weight)
            for weight in casts
            for candidate in (tensor, tensor.T)
        )

    saved: dict[int, tuple[int, bool]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if tensor.is_floating_point() and storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = (storage.nbytes(), is_cast(tensor))
        return tensor

    ids = torch.randint(0, config.vocab_size, (batch, seq_len))
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        model(input_ids=ids, labels=ids, use_cache=False)
    activations = sum(size for size, cast in saved.values() if not cast)
    return activations, sum(size for size, cast in saved.values() if cast)


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_the_saved_activations_are_what_torch_keeps(bf16: bool) -> None:
    """The activation term of the memory estimate, against the tensors autograd really saves for
    backward in a forward of the tiny model's shape (narrowed, so it is quick), within 3 %; under
    bf16 autocast also the bf16 copies of the weights."""
    config = GroundworkConfig(vocab_size=2048, d_model=128, n_layer=2, n_head=4, d_ff=341)
    batch, seq_len = 4, 96
    precision = "bf16" if bf16 else "fp32"
    activations, casts = _saved_bytes(config, batch, seq_len, bf16=bf16)

    expected = batch * seq_len * sizing.saved_activation_bytes_per_token(config, seq_len, precision)
    assert activations == pytest.approx(expected, rel=0.03)
    expected_casts = 2 * sizing.matmul_parameter_count(config) if bf16 else 0
    assert casts == pytest.approx(expected_casts, rel=0.03)


def test_training_memory_adds_weights_gradients_adamw_and_activations() -> None:
    config = config_of("small")
    n = sizing.parameter_count(config)
    fp32 = sizing.training_memory(config, batch_size=16, seq_len=256)
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (4 * n, 4 * n, 8 * n)
    assert fp32.activations == 16 * 256 * sizing.activation_bytes_per_token(config, 256, "fp32")
    assert fp32.total == sizing.training_memory_bytes(config, batch_size=16, seq_len=256)

    bf16 = sizing.training_memory(config, batch_size=16, seq_len=256, precision="bf16")
    assert bf16.weights == 4 * n + 2 * sizing.matmul_parameter_count(config)
    assert bf16.activations < fp32.activations
    # A measured parameter count (an imported or resized model) replaces the computed one.
    assert sizing.training_memory(config, batch_size=1, seq_len=8, parameters=1000).optimizer == 8000
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, not 'int8'"):
        sizing.training_memory(config, batch_size=1, seq_len=8, precision="int8")


def test_model_sizes_read_generic_names_and_say_what_is_missing() -> None:
    llama_like = {"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    with pytest.raises(ValueError, match="the model's config has no d_ff"):
        sizing.ModelSizes.of(llama_like)
    sizes = sizing.ModelSizes.of({**llama_like, "intermediate_size": 128})
    assert (sizes.d_model, sizes.n_layer, sizes.n_head, sizes.d_ff) == (64, 2, 4, 128)


def test_mfu_and_words() -> None:
    assert sizing.mfu(1000.0, 2e9, 4e12) == pytest.approx(0.5)
    assert sizing.human_count(5_246_336) == "5.2M"
    assert sizing.human_count(119_563_392) == "119.6M"
    assert sizing.human_bytes(512) == "512 B"
    assert sizing.human_bytes(3 * 2**30) == "3.0 GiB"


# --- presets in a job's hyperparameters -----------------------------------------------------


def test_a_preset_resolves_to_its_sizes_and_explicit_sizes_replace_the_presets() -> None:
    assert model_sizes_resolve() == {}
    assert model_sizes_resolve(model={"n_layer": 2}) == {"model": {"n_layer": 2}}
    assert model_sizes_resolve("small") == {"preset": "small", "model": MODEL_PRESETS["small"]}
    assert model_sizes_resolve("small", {"n_layer": 6}) == {
        "preset": "small",
        "model": {**MODEL_PRESETS["small"], "n_layer": 6},
    }


@pytest.mark.parametrize(
    ("preset", "model", "field", "message"),
    [
        ("huge", None, "preset", "unknown preset 'huge'; known: tiny, small, base"),
        (7, None, "preset", "unknown preset '7'"),
        ("small", {"n_head": 7}, "model.d_model", "must be a multiple of n_head, got 512 and 7"),
        ("small", {"layers": 7}, "model.layers", "unknown model size"),
    ],
)
def test_a_bad_preset_or_override_is_refused_naming_it(
    preset: Any, model: Any, field: str, message: str
) -> None:
    with pytest.raises(HyperparameterError) as raised:
        model_sizes_resolve(preset, model)
    assert raised.value.field == field
    assert message in str(raised.value)
