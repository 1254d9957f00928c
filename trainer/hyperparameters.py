"""Training hyperparameters: validated where a job is queued (the web process), used where it
trains (a Celery worker). No torch here, so queueing a job does not load it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Hyperparameters:
    steps: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 256
    warmup_steps: int = 20
    weight_decay: float = 0.1
    checkpoint_every: int = 50
    seed: int = 0
    bf16: bool | None = None  # None: where the CPU that trains computes bf16 (training.uses_bf16)
    # How often (seconds) progress is reported; every report also checks for cancellation.
    report_every: float = 2.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        """Validated hyperparameters; an unknown name or a bad value is a ValueError naming it."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}; known: {', '.join(known)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            default = getattr(cls, name)
            kind = bool if default is None else type(default)  # bf16: a bool, or None for the default
            try:
                if kind is bool:
                    if not isinstance(value, bool) and not (value is None and default is None):
                        raise TypeError
                    values[name] = value
                else:
                    values[name] = kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"hyperparameter {name}: expected {kind.__name__}, got {value!r}") from None
        hp = cls(**values)
        positive = ("steps", "learning_rate", "batch_size", "max_length", "checkpoint_every", "report_every")
        for name in positive:
            if getattr(hp, name) <= 0:
                raise ValueError(f"hyperparameter {name} must be positive, got {getattr(hp, name)}")
        if hp.max_length < 8:
            raise ValueError("hyperparameter max_length must be at least 8")
        return hp

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
