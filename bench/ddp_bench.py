"""DDP scaling on the CPU (``make bench``, part ``ddp`` of ``bench/trainer_bench.py``).

``trainer.distributed.run`` — the code a ``world_size`` job trains with — on the default model
(``GroundworkConfig()``: vocabulary 8192, d_model 256, 4 layers) and batches of 16 rows of 256
random ids (every id a loss token, no padding, so every step holds 4,096 tokens), once with 1
process and once with 2 gloo processes. Each process gets the same CPU threads in both runs (half
of those this benchmark may use, at least 1), so the comparison is of processes, not of cores:
scaling efficiency = tokens/s(2) / (2 x tokens/s(1)); 1.0 is perfect, and the loss is what the
gradients' all-reduce and the per-step go-on broadcast cost (and, on a machine with fewer free
cores than the 2 processes' threads, the contention). tokens/s: the global batch's tokens of the
steps between the first report after the warm-up steps and the last, over their seconds (reports
every 0.1 s; startup of the processes, the warm-up steps and the checkpoint at the end are not
counted). Needs no database.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from bench.report import Metric, say

BATCH = 16
CONTEXT = 256
SEED = 20261205


def _tokens_per_second(world_size: int, threads: int, warmup: int, steps: int) -> float:
    import torch

    from trainer import distributed, training
    from trainer.hyperparameters import Hyperparameters
    from trainer.modeling import GroundworkConfig, model_init

    config = GroundworkConfig(dropout=0.0, use_cache=False)
    model = model_init(config, seed=SEED)
    generator = torch.Generator().manual_seed(SEED)
    ids = torch.randint(3, config.vocab_size, (256, CONTEXT), generator=generator).tolist()
    examples = [(row, [1] * CONTEXT) for row in ids]
    hp = Hyperparameters.from_dict(
        {
            "steps": warmup + steps,
            "batch_size": BATCH,
            "max_length": CONTEXT,
            "warmup_steps": 1,
            "checkpoint_every": warmup + steps,
            "report_every": 0.1,
            "world_size": world_size,
        }
    )
    reports: list[tuple[float, int]] = []

    def report(progress: training.Progress) -> bool:
        if progress.step >= warmup:
            reports.append((time.monotonic(), progress.step))
        return True

    torch.set_num_threads(threads * world_size)  # distributed.run gives each rank its share
    with tempfile.TemporaryDirectory(prefix="ddp-bench-") as folder:
        distributed.run(
            model,
            examples,
            hp,
            pad_id=0,
            checkpoint_dir=Path(folder),
            report=report,
            device=torch.device("cpu"),
        )
    (start, first), (end, last) = reports[0], reports[-1]
    if last <= first:
        raise RuntimeError(f"world_size {world_size}: too few reports after the warm-up to time ({reports})")
    return (last - first) * BATCH * CONTEXT / (end - start)


def bench_ddp(*, warmup: int, steps: int, threads: int) -> list[Metric]:
    per_process = max(1, threads // 2)
    say(
        f"ddp: trainer.distributed.run, default model, batch {BATCH} x {CONTEXT} tokens, "
        f"{warmup} warm-up + {steps} timed steps, {per_process} thread(s) per process, gloo"
    )
    one = _tokens_per_second(1, per_process, warmup, steps)
    say(f"  1 process: {one:,.0f} tokens/s")
    two = _tokens_per_second(2, per_process, warmup, steps)
    efficiency = two / (2 * one)
    say(f"  2 processes: {two:,.0f} tokens/s; scaling efficiency {efficiency:.2f}")
    return [
        Metric("ddp: 1 process tokens/s", one, "tokens/s"),
        Metric("ddp: 2 processes tokens/s", two, "tokens/s"),
        Metric("ddp: scaling efficiency (2 vs 1)", efficiency, "x"),
        Metric("ddp: threads per process", per_process, "threads"),
    ]
