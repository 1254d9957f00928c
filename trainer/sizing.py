"""How big a Groundwork model is: its parameters, its training FLOPs per token, and the memory a
training step needs.

Pure Python (no torch, no Django): the web process sizes a job before any worker loads a model,
and the benchmarks compute model FLOPs utilisation (MFU) with the same numbers. The counts follow
``trainer.modeling`` exactly (``tests/trainer/test_sizing.py`` checks them against the model):

- a token embedding of ``vocab_size × d_model``, tied to the language-model head (counted once);
- the relative position bias, ``num_buckets × n_head``, shared by every layer;
- per layer: two RMSNorm gains (``d_model`` each), ``qkv`` (``d_model × 3 d_model``), ``out``
  (``d_model²``), the gated-GELU ``wi`` (``d_model × 2 d_ff``) and ``wo`` (``d_ff × d_model``);
  no biases;
- a final RMSNorm gain (``d_model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# GroundworkConfig's defaults (the "tiny" preset and the 8192-token vocabulary; a test keeps
# them equal), for sizes a job or a config leaves out.
DEFAULTS: dict[str, int] = {
    "vocab_size": 8192,
    "d_model": 256,
    "n_layer": 4,
    "n_head": 4,
    "d_ff": 683,
    "relative_attention_num_buckets": 32,
}
# Other names of the same sizes: transformers' generic ones (GroundworkConfig maps them too, and a
# Llama-style config of an imported model uses them).
ALIASES: dict[str, tuple[str, ...]] = {
    "d_model": ("hidden_size", "n_embd"),
    "n_layer": ("num_hidden_layers",),
    "n_head": ("num_attention_heads",),
    "d_ff": ("intermediate_size",),
}
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ModelSizes:
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    relative_attention_num_buckets: int = 32

    @classmethod
    def of(cls, config: Any, *, defaults: Mapping[str, int] | None = None) -> ModelSizes:
        """The sizes of ``config``: a ``ModelSizes``, a ``GroundworkConfig`` (or any object with
        the sizes as attributes) or a mapping (a model version's ``config``, a job's ``model``).
        A size it lacks, under its name and its ``ALIASES``, is taken from ``defaults`` (the bias's
        buckets: T5's 32); with none there, a ``ValueError`` names it."""
        if isinstance(config, ModelSizes):
            return config
        values: dict[str, int] = {}
        for name in DEFAULTS:
            value = None
            for key in (name, *ALIASES.get(name, ())):
                value = config.get(key) if isinstance(config, Mapping) else getattr(config, key, None)
                if value is not None:
                    break
            if value is None:
                fallback = {"relative_attention_num_buckets": 32, **(defaults or {})}
                value = fallback.get(name)
            if value is None:
                raise ValueError(f"the model's config has no {name}")
            values[name] = int(value)
        return cls(**values)


def parameter_count(config: Any) -> int:
    """The parameters of a ``GroundworkForCausalLM`` of ``config``'s sizes (tied weights once):
    ``V d + buckets h + L (4 d² + 3 d d_ff + 2 d) + d``."""
    s = ModelSizes.of(config)
    per_layer = 4 * s.d_model**2 + 3 * s.d_model * s.d_ff + 2 * s.d_model
    embeddings = s.vocab_size * s.d_model + s.relative_attention_num_buckets * s.n_head
    return embeddings + s.n_layer * per_layer + s.d_model


def matmul_parameter_count(config: Any) -> int:
    """The weights that take part in a matrix multiplication: every layer's four matrices and the
    head (the tied embedding, once). Leaves out the norm gains and the bias table (0.01 % of the
    tiny model), which cost no matmul FLOPs."""
    s = ModelSizes.of(config)
    return s.vocab_size * s.d_model + s.n_layer * (4 * s.d_model**2 + 3 * s.d_model * s.d_ff)


def flops_per_token(config: Any, seq_len: int) -> int:
    """Training FLOPs of one token in a sequence of ``seq_len``: ``6 N + 12 L d T``.

    The convention of PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT's ``estimate_mfu``:
    a weight of a matrix multiplication costs 2 FLOPs a token forward (a multiply and an add) and
    4 backward (the gradients of the input and of the weight), so ``6 N`` with ``N`` the matmul
    weights (``matmul_parameter_count``; the tied head counted once, as the head's matmul; the
    embedding lookup is free). Attention adds, per layer and token, ``q kᵀ`` and ``weights v``: ``2 ×
    2 T d`` forward, three times that forward and backward: ``12 L d T``. Our attention computes the
    whole ``T × T`` square (causality is a mask), so no halving. Norms, softmax, GELU, the bias
    and the optimizer step are not counted, as there: MFU compares the model's matmul work with
    the machine's matmul peak.
    """
    s = ModelSizes.of(config)
    return 6 * matmul_parameter_count(s) + 12 * s.n_layer * s.d_model * seq_len


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training step holds at its peak, by kind (``training_memory``)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    precision: str

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "precision": self.precision,
        }


def saved_activation_bytes_per_token(config: Any, seq_len: int, precision: str = "fp32") -> int:
    """Bytes of the tensors a forward pass keeps for backward, per token of a ``seq_len`` batch
    (not counting the bf16 copies of the weights, which ``training_memory`` counts with them).

    With ``a`` bytes in the compute precision (4 fp32, 2 bf16 autocast), per layer: each RMSNorm
    keeps its input (the residual stream, fp32 even under autocast), its normalised input (fp32)
    and one fp32 scale (``2 × (2 d + 1) × 4``); in ``a``: the inputs of ``qkv``, ``out`` and ``wi``
    (``3 d``), ``q``, ``k`` and ``v`` (``3 d``), the softmax output (``n_head × T``), ``wi``'s output
    (gate and value, ``2 d_ff``), ``gelu(gate)`` and the product, ``wo``'s input (``2 d_ff``).
    After the layers: the final norm's (``(2 d + 1) × 4``), the head's input (``d × a``) and the
    log-softmax cross-entropy keeps (``V × 4``).
    """
    s = ModelSizes.of(config)
    a = PRECISION_BYTES[precision]
    norm = (2 * s.d_model + 1) * 4
    per_layer = 2 * norm + (6 * s.d_model + 4 * s.d_ff + s.n_head * seq_len) * a
    return s.n_layer * per_layer + norm + s.d_model * a + s.vocab_size * 4


def activation_bytes_per_token(config: Any, seq_len: int, precision: str = "fp32") -> int:
    """``saved_activation_bytes_per_token`` and the two fp32 gradients of vocabulary width that
    backward starts with (of the log-softmax and of the logits, ``2 × V × 4``) while every saved
    tensor still lives: the peak of a step, per token."""
    s = ModelSizes.of(config)
    return saved_activation_bytes_per_token(s, seq_len, precision) + 2 * s.vocab_size * 4


def training_memory(
    config: Any,
    *,
    batch_size: int,
    seq_len: int,
    precision: str = "fp32",
    parameters: int | None = None,
) -> MemoryEstimate:
    """An estimate of the memory one training step of ``batch_size × seq_len`` tokens needs:

        weights + gradients + AdamW states + activations
        = 4 N (+ 2 N_mm under bf16) + 4 N + 8 N + batch_size × seq_len × activation_bytes_per_token

    Weights, gradients and AdamW's two moments are fp32 whatever the precision (autocast computes
    in bf16 but keeps fp32 parameters); under bf16 autocast also keeps a bf16 copy of each matmul
    weight (``N_mm``, ``matmul_parameter_count``) for the forward. ``N`` is ``parameters`` when
    known (a model version's measured count), else ``parameter_count(config)``. Activations are
    what the forward keeps for backward and the first gradients of backward
    (``activation_bytes_per_token``); not counted: the
    framework (CUDA context, allocator slack, kernels' workspaces), dropout masks (dropout is 0 by
    default), the data and the attention bias (``n_head × T²``, shared by the batch). The saved
    tensors are those torch keeps, within 3 % (``tests/trainer/test_sizing.py`` counts them); on
    the CPU, a process's peak resident memory over two AdamW steps came 8-19 % above the total
    (tiny at 16 × 256 and small at 4 × 256 tokens, fp32 and bf16: allocator slack and the
    transient buffers of backward).
    """
    if precision not in PRECISION_BYTES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_BYTES)}, not {precision!r}")
    n = parameters if parameters else parameter_count(config)
    casts = 2 * matmul_parameter_count(config) if PRECISION_BYTES[precision] < 4 else 0
    return MemoryEstimate(
        weights=4 * n + casts,
        gradients=4 * n,
        optimizer=8 * n,
        activations=batch_size * seq_len * activation_bytes_per_token(config, seq_len, precision),
        precision=precision,
    )


def training_memory_bytes(
    config: Any, *, batch_size: int, seq_len: int, precision: str = "fp32", parameters: int | None = None
) -> int:
    """``training_memory(...).total``: the bytes of weights, gradients, AdamW states and activations."""
    return training_memory(
        config, batch_size=batch_size, seq_len=seq_len, precision=precision, parameters=parameters
    ).total


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the share of the machine's matmul peak the training's model FLOPs
    (``flops_per_token``) use."""
    return tokens_per_second * flops_per_token / peak_flops


def human_bytes(count: float) -> str:
    """``count`` bytes in binary units: "512 B", "3.4 MiB", "1.2 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_count(count: float) -> str:
    """A parameter count: "5.2M", "119.6M", "1.3B", "812K"."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(count) >= threshold:
            return f"{count / threshold:.1f}{suffix}"
    return f"{count:.0f}"
