"""Training hyperparameters and model sizes: validated where a job is queued (the web process),
used where it trains (a Celery worker). No torch here, so queueing a job does not load it.

Every number a person sets has bounds (``BOUNDS``, ``MODEL_SIZE_BOUNDS``), so that no request can
queue a job that runs for years, allocates more memory than a machine has, or trains on NaN.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# (least, most) of each hyperparameter; both ends allowed.
BOUNDS: dict[str, tuple[float, float]] = {
    "steps": (1, 1_000_000),
    "learning_rate": (1e-8, 1.0),
    "batch_size": (1, 1024),
    "max_length": (8, 4096),
    "warmup_steps": (0, 1_000_000),
    "weight_decay": (0.0, 1.0),
    "checkpoint_every": (1, 1_000_000),
    "seed": (0, 2**32 - 1),  # what numpy's and every other generator's seed takes
    "report_every": (0.1, 3600.0),
    "qs_mix_share": (0.0, 1.0),
    # Data-parallel processes (trainer.distributed): one a GPU on CUDA, sharing the cores on a CPU.
    "world_size": (1, 64),
    "dpo_beta": (0.001, 10.0),
}
# Tokens in one optimizer step (batch_size × max_length): what a step's activations grow with.
MAX_TOKENS_PER_STEP = 262_144  # 64 × the default 16 × 256

# Model sizes of a pretrain job (``hyperparameters.model``): (least, most) of each.
MODEL_SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "d_model": (8, 4096),
    "n_layer": (1, 64),
    "n_head": (1, 64),
    "d_ff": (8, 16_384),
}

# Named model sizes of a pretrain job (``hyperparameters.preset``). "tiny" is GroundworkConfig's
# defaults: what a job that names neither a preset nor sizes trains. With the default vocabulary
# of 8192 (trainer.sizing.parameter_count): tiny 5.2M parameters, small 36.3M, base 119.6M.
# d_ff keeps the gated-GELU feed-forward near 8/3 d_model (as many weights as a 4x MLP); small's
# and base's widths are multiples of 128, and their heads 64 wide.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 256, "n_layer": 4, "n_head": 4, "d_ff": 683},
    "small": {"d_model": 512, "n_layer": 10, "n_head": 8, "d_ff": 1408},
    "base": {"d_model": 768, "n_layer": 16, "n_head": 12, "d_ff": 2048},
}
DEFAULT_PRESET = "tiny"
# The keys of a job's hyperparameters that size its model rather than its training.
MODEL_KEYS = ("preset", "model")

# Vocabulary size of a new tokenizer (``train_first_model --vocab-size``): at least the 256 bytes
# and the special tokens, at most what an embedding row per token keeps reasonable.
VOCAB_SIZE_BOUNDS = (300, 65_536)


class HyperparameterError(ValueError):
    """A bad hyperparameter: ``field`` names it (``steps``, ``model.d_model``), ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"hyperparameter {field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Hyperparameters:
    steps: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 256
    warmup_steps: int = 20
    weight_decay: float = 0.1
    checkpoint_every: int = 50
    # Seeds a pretrain job's initial weights, the batch order and dropout: same datasets and
    # hyperparameters, same model (modeling.model_init).
    seed: int = 0
    bf16: bool | None = None  # None: where the CPU that trains computes bf16 (training.uses_bf16)
    # How often (seconds) progress is reported; every report also checks for cancellation.
    report_every: float = 2.0
    # finetune_groundedness only: the share of the quality-safety training examples of the base
    # model's lineage (the data its discriminators learnt from) mixed into the groundedness data.
    qs_mix_share: float = 0.2
    # Processes training the job data-parallel (DDP; trainer.distributed). The global batch is the
    # same whatever the world size: each rank takes batch_size / world_size of its rows.
    world_size: int = 1
    # finetune_preference only: DPO's β, how far the policy may move from the reference (the base
    # model) for a given preference margin (Rafailov et al. 2023; TRL's default).
    dpo_beta: float = 0.1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        """Validated hyperparameters; an unknown name or a bad value is a ``HyperparameterError``
        (a ValueError) naming it."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise HyperparameterError(unknown[0], f"unknown hyperparameter; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            default = getattr(cls, name)
            if default is None:  # bf16: a bool, or None for the default
                if not isinstance(value, bool) and value is not None:
                    raise HyperparameterError(name, f"expected bool, got {value!r}")
                values[name] = value
            else:
                values[name] = _number(name, value, type(default), *BOUNDS[name])
        hp = cls(**values)
        if hp.batch_size * hp.max_length > MAX_TOKENS_PER_STEP:
            raise HyperparameterError(
                "batch_size",
                f"batch_size × max_length must be at most {MAX_TOKENS_PER_STEP} tokens a step, "
                f"got {hp.batch_size} × {hp.max_length}",
            )
        if hp.batch_size % hp.world_size:
            raise HyperparameterError(
                "batch_size",
                f"must be divisible by world_size (each of the {hp.world_size} processes takes an "
                f"equal share of the batch), got batch_size {hp.batch_size}",
            )
        return hp

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_sizes_from_dict(data: Any, *, defaults: dict[str, int] | None = None) -> dict[str, int]:
    """The model sizes of a pretrain job, checked: integers within ``MODEL_SIZE_BOUNDS``, and
    ``d_model`` a multiple of ``n_head`` (the ``defaults`` filling in either one not given: the
    tiny preset's unless a preset is named); else ``HyperparameterError`` naming ``model.<size>``."""
    if not isinstance(data, dict):
        raise HyperparameterError("model", f"must be an object of {', '.join(MODEL_SIZE_BOUNDS)}")
    unknown = sorted(set(data) - set(MODEL_SIZE_BOUNDS))
    if unknown:
        raise HyperparameterError(
            f"model.{unknown[0]}", f"unknown model size; known: {', '.join(MODEL_SIZE_BOUNDS)}"
        )
    sizes = {
        name: _number(f"model.{name}", value, int, *MODEL_SIZE_BOUNDS[name]) for name, value in data.items()
    }
    chosen = {**(defaults or MODEL_PRESETS[DEFAULT_PRESET]), **sizes}
    if chosen["d_model"] % chosen["n_head"]:
        raise HyperparameterError(
            "model.d_model", f"must be a multiple of n_head, got {chosen['d_model']} and {chosen['n_head']}"
        )
    return sizes


def model_sizes_resolve(preset: Any = None, model: Any = None) -> dict[str, Any]:
    """What a pretrain job stores of its model's size, from its ``preset`` and ``model`` sizes.

    - neither: ``{}`` (GroundworkConfig's defaults, the "tiny" preset);
    - ``model`` alone: ``{"model": sizes}``, the sizes given (the others are the defaults);
    - ``preset``: ``{"preset": name, "model": sizes}``, all four sizes of the preset, each one
      ``model`` names replacing the preset's (``{"preset": "small", "model": {"n_layer": 6}}`` is
      the small preset with 6 layers), checked together (``d_model`` a multiple of ``n_head``).

    A preset that is not a name of ``MODEL_PRESETS`` is a ``HyperparameterError`` naming ``preset``
    and listing the known ones; a bad size one naming ``model.<size>``.
    """
    if preset is None or preset == "":
        sizes = model_sizes_from_dict(model if model is not None else {})
        return {"model": sizes} if sizes else {}
    if not isinstance(preset, str) or preset not in MODEL_PRESETS:
        raise HyperparameterError(
            "preset", f"unknown preset {str(preset)[:40]!r}; known: {', '.join(MODEL_PRESETS)}"
        )
    overrides = model_sizes_from_dict(model if model is not None else {}, defaults=MODEL_PRESETS[preset])
    return {"preset": preset, "model": {**MODEL_PRESETS[preset], **overrides}}


def _number(field: str, value: Any, kind: type, least: float, most: float) -> Any:
    """``value`` as an int or a float within [least, most]; a numeric string is taken (forms send
    them), a bool, a fraction for an int, NaN or infinity are not."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value) if kind is float else _integer(value)
    except (TypeError, ValueError, OverflowError):
        raise HyperparameterError(field, f"expected {kind.__name__}, got {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise HyperparameterError(field, f"must be a finite number, got {value!r}")
    if not least <= number <= most:
        raise HyperparameterError(field, f"must be between {least} and {most}, got {str(number)[:40]}")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, str):
        value = value.strip()
        if len(value) > 30:
            raise ValueError
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError
