"""Model FLOPs utilisation (MFU) of training, for the trainer benchmark (``bench.trainer_bench``,
part ``train``) and any script that trains on a device (``matmul_peak_flops`` takes one).

MFU = tokens/s × training FLOPs per token ÷ the machine's matmul peak, in the precision the
training computes in. FLOPs per token are ``trainer.sizing.flops_per_token`` (6 N + 12 L d T, the
PaLM and nanoGPT convention: the model's matmul work only). The peak is not a datasheet's: it is
measured in the same run, as the best FLOP/s of a large square matmul (``PEAK_SIZE``², 2 n³ FLOPs
each) timed for about a second, in fp32 and, when the training autocasts to it, bf16. An MFU of
1 would mean the training spends all its time in matmuls as fast as the best square one; the rest
goes to attention's small matmuls, softmax, norms, GELU, the optimizer and Python.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from bench.report import Metric, say

if TYPE_CHECKING:
    import torch

PEAK_SIZE = 2048  # the square matmul timed for the peak
PEAK_SECONDS = 1.0  # timed for about this long per precision, after one warm-up
SMALL_PRESET = "small"
SMALL_BATCH = 4  # sequences a step of the small preset (4 x 256 = 1,024 tokens): a few seconds on 2 cores


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak_flops(dtype: torch.dtype, *, device: str = "cpu", size: int = PEAK_SIZE) -> float:
    """The best FLOP/s of ``a @ b`` (``size`` × ``size``, ``dtype``) on ``device`` over about
    ``PEAK_SECONDS`` of repeats, after a warm-up."""
    import torch

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: kernels chosen, memory touched
    _sync(device)
    best = float("inf")
    started = time.perf_counter()
    while time.perf_counter() - started < PEAK_SECONDS:
        begin = time.perf_counter()
        torch.matmul(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - begin)
    return 2 * size**3 / best


def small_preset_tokens_per_second(
    *, vocab_size: int, context: int, bf16: bool, warmup: int, steps: int, seed: int
) -> tuple[float, float]:
    """Training tokens/s (median of ``steps`` timed steps after ``warmup``) of the small preset
    on batches of ``SMALL_BATCH`` × ``context`` random ids, as the benchmark trains ours; and the
    last loss (to check it is finite)."""
    import torch

    from trainer.hyperparameters import MODEL_PRESETS
    from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

    config = GroundworkConfig(
        **MODEL_PRESETS[SMALL_PRESET], vocab_size=vocab_size, dropout=0.0, use_cache=False
    )
    torch.manual_seed(seed)
    model = GroundworkForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    generator = torch.Generator().manual_seed(seed)
    timings: list[float] = []
    loss = torch.tensor(float("nan"))
    for step in range(warmup + steps):
        ids = torch.randint(0, vocab_size, (SMALL_BATCH, context), generator=generator)
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            timings.append(time.perf_counter() - started)
    return SMALL_BATCH * context / statistics.median(timings), float(loss.detach())


def bench_mfu(
    *,
    ours_config: Any,
    ours_tokens_per_second: float,
    context: int,
    bf16: bool,
    warmup: int,
    steps: int,
    seed: int,
) -> list[Metric]:
    """The matmul peaks of this machine, and the MFU of the default model (``ours``, timed by the
    caller at ``ours_tokens_per_second``) and of the small preset (timed here)."""
    import math

    import torch

    from trainer import sizing
    from trainer.hyperparameters import MODEL_PRESETS

    precision = "bf16" if bf16 else "fp32"
    peaks = {"fp32": matmul_peak_flops(torch.float32)}
    if bf16:
        peaks["bf16"] = matmul_peak_flops(torch.bfloat16)
    say(
        "  matmul peak ("
        + ", ".join(f"{name} {flops / 1e9:,.0f} GFLOP/s" for name, flops in peaks.items())
        + f"; {PEAK_SIZE}² matrices, best of ~{PEAK_SECONDS:g} s each)"
    )
    vocab_size = sizing.ModelSizes.of(ours_config).vocab_size
    small_config = {**MODEL_PRESETS[SMALL_PRESET], "vocab_size": vocab_size}
    say(
        f"  small preset: {sizing.parameter_count(small_config):,} parameters, {SMALL_BATCH} x {context} "
        f"tokens a step, {warmup} warm-up then {steps} timed"
    )
    small_rate, small_loss = small_preset_tokens_per_second(
        vocab_size=vocab_size, context=context, bf16=bf16, warmup=warmup, steps=steps, seed=seed
    )
    if not math.isfinite(small_loss):
        raise RuntimeError(f"small preset: the loss was not finite: {small_loss}")
    rows = {
        "ours (tiny)": (ours_tokens_per_second, sizing.flops_per_token(ours_config, context)),
        f"{SMALL_PRESET} preset": (small_rate, sizing.flops_per_token(small_config, context)),
    }
    metrics = [Metric(f"train: matmul peak {name}", flops / 1e9, "GFLOP/s") for name, flops in peaks.items()]
    for name, (rate, flops) in rows.items():
        utilisation = sizing.mfu(rate, flops, peaks[precision])
        say(
            f"  {name}: {rate:,.0f} tokens/s x {flops / 1e6:,.1f} MFLOP a token = "
            f"{rate * flops / 1e9:,.1f} GFLOP/s: MFU {utilisation:.1%} of the {precision} peak"
        )
        if name != "ours (tiny)":  # ours' tokens/s is in the table already
            metrics.append(Metric(f"train: {name} tokens/s", rate, "tokens/s"))
        metrics.append(Metric(f"train: {name} FLOPs per token", flops / 1e6, "MFLOP"))
        metrics.append(Metric(f"train: {name} MFU ({precision})", utilisation * 100, "%"))
    return metrics
