"""The GPU check (``make gpu-check``): train the "small" preset on CUDA, 1 GPU and (when the machine
has several) all of them data-parallel (NCCL), answer a greeting by sample-and-rank with the
trained model, and write tokens/s, MFU and peak memory to ``var/bench/gpu-check.json``.

No database, no Django, no network: the dialogs are synthetic sentences (seeded), the tokenizer
is trained on them here (``trainer.tokenizer``), examples are rendered as training renders them
(``trainer.formats.generative``) and trained by the code a job trains with
(``trainer.distributed.run``, which is ``trainer.training.train`` for 1 process), in the precision
a job would get there (``trainer.devices``: bf16 autocast where the card has it, TF32 matmuls).

Figures of each run: tokens/s between the first report after the warm-up steps and the last
(reports every 0.5 s), MFU = tokens/s x FLOPs per token / the peak matmul FLOP/s measured here in
the same precision (``bench.mfu.matmul_peak_flops``: an 8192-wide square matmul timed on the
card), for N GPUs against N x that peak; peak memory (``torch.cuda.max_memory_allocated`` of rank
0). FLOPs per token: ``trainer.sizing.flops_per_token``, as ``make bench``'s MFU (6 x the matmul
weights, the tied head once, + 12 x layers x d_model x context; PaLM's appendix B count).

Without CUDA it exits with a message and status 2. ``--device cpu --steps 5`` runs the same
plumbing on the CPU (what the tests machine can do; figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench.mfu import PEAK_SIZE, matmul_peak_flops  # noqa: E402
from bench.report import Metric, print_table, say  # noqa: E402
from trainer import devices, distributed, formats, sampling, sizing, training  # noqa: E402
from trainer import tokenizer as tokenizers  # noqa: E402
from trainer.hyperparameters import Hyperparameters  # noqa: E402
from trainer.modeling import GroundworkConfig, model_init  # noqa: E402

try:  # the presets of issue 16 part 3
    from trainer.hyperparameters import MODEL_PRESETS

    SMALL = MODEL_PRESETS["small"]
except ImportError:  # before they landed: the small sizes of the issue
    SMALL = {"d_model": 512, "n_layer": 8, "n_head": 8, "d_ff": 1365}

OUT = ROOT / "var" / "bench" / "gpu-check.json"
SEED = 20261205
_WORD_TEXT = (
    "the a of to and in is it you that was for on are with as I his they be at one have this from "
    "or had by hot word but what some we can out other were all there when up use your how said an "
    "each she which do their time if will way about many then them write would like so these her "
    "long make thing see him two has look more day could go come did number sound no most people"
)
WORDS = _WORD_TEXT.split()


def _dialogs(count: int) -> list[tuple[list[tuple[str, str]], str]]:
    """``count`` (context of 3 turns, response) of seeded random sentences of 6-18 words."""
    generator = torch.Generator().manual_seed(SEED)

    def sentence() -> str:
        length = int(torch.randint(6, 19, (1,), generator=generator))
        picks = torch.randint(len(WORDS), (length,), generator=generator).tolist()
        return " ".join(WORDS[i] for i in picks).capitalize() + ".?!"[picks[0] % 3]

    return [
        ([("user", sentence()), ("model", sentence()), ("user", sentence())], sentence())
        for _ in range(count)
    ]


def measured_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Matmul FLOP/s of ``device`` in ``dtype``: ``bench.mfu``'s measure (the best of repeated
    square matmuls), 8192 wide on a GPU, whose peak small matrices do not reach."""
    return matmul_peak_flops(dtype, device=str(device), size=8192 if device.type == "cuda" else PEAK_SIZE)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def train_run(
    world_size: int, device: torch.device, examples: list, tokenizer: Any, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    config = GroundworkConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **SMALL,
    )
    model = model_init(config, seed=SEED)
    hp = Hyperparameters.from_dict(
        {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "warmup_steps": min(20, args.steps),
            "checkpoint_every": args.steps,
            "report_every": 0.5,
            "world_size": world_size,
        }
    )
    warmup = max(1, args.steps // 10)
    reports: list[tuple[float, int, float]] = []

    def report(progress: training.Progress) -> bool:
        _sync(device)
        if progress.step >= warmup:
            reports.append((time.monotonic(), progress.step, progress.loss))
        return True

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        progress = distributed.run(
            model,
            examples,
            hp,
            pad_id=tokenizer.pad_token_id,
            checkpoint_dir=Path(folder),
            report=report,
            device=device,
            timeout_s=300,
        )
    (start, first, _), (end, last, loss) = reports[0], reports[-1]
    steps_timed = last - first
    # The tokens of the timed steps: the same batches the loop drew (training._batch_indices).
    drawn = sum(
        min(len(examples[i][0]), args.max_length)
        for step in range(first, last)
        for i in training._batch_indices(len(examples), hp, step)
    )
    seconds = end - start
    parameters = sum(p.numel() for p in model.parameters())
    flops_per_token = sizing.flops_per_token(config, args.max_length)  # as make bench's MFU
    return {
        "world_size": world_size,
        "device": devices.describe(device, world_size),
        "precision": devices.precision(device),
        "parameters": parameters,
        "steps": args.steps,
        "timed_steps": steps_timed,
        "tokens_per_second": drawn / seconds if steps_timed else None,
        "average_tokens_per_second": progress.average_tokens_per_second,
        "flops_per_token": flops_per_token,
        "loss_first": progress.history[0][1],
        "loss_last": loss,
        "peak_memory_mib": _peak_memory_mib(device),
    }, model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--dialogs", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu-check: no CUDA device here (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}). Run it on a machine with an "
            "NVIDIA GPU and a CUDA build of torch; `--device cpu --steps 5` only tests its plumbing.",
            file=sys.stderr,
        )
        return 2
    device = devices.choose(args.device, name="--device")
    devices.prepare(device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    say(f"gpu-check on {devices.describe(device, gpus)}, preset small {SMALL}, {args.steps} steps")

    dialogs = _dialogs(args.dialogs)
    tokenizer = tokenizers.train_tokenizer(
        (text for context, response in dialogs for text in [*(t for _, t in context), response]),
        vocab_size=4096,
    )
    examples = []
    for context, response in dialogs:
        example = formats.generative(tokenizer, context, response)
        examples.append((example.ids, example.loss_mask))

    dtype = torch.bfloat16 if devices.uses_bf16(device) else torch.float32
    peak = measured_peak(device, dtype)
    say(f"measured matmul peak: {peak / 1e12:.1f} TFLOP/s ({dtype})")
    runs = []
    worlds = [1] + ([gpus] if gpus > 1 else [])
    model = None
    for world in worlds:
        result, trained = train_run(world, device, examples, tokenizer, args)
        result["mfu"] = (
            result["tokens_per_second"] * result["flops_per_token"] / (peak * world)
            if result["tokens_per_second"]
            else None
        )
        rate, mfu = result["tokens_per_second"] or 0, result["mfu"] or 0
        say(f"  {result['device']}: {rate:,.0f} tokens/s, MFU {mfu:.1%}")
        runs.append(result)
        model = model or trained

    scorer = sampling.Scorer(model, tokenizer, discriminators=False)
    started = time.perf_counter()
    answer = scorer.respond([("user", "Hello! How are you today?")], sampling.Settings(), seed=SEED)
    respond_seconds = time.perf_counter() - started
    say(f"  sample-and-rank ({len(answer.candidates)} candidates, {respond_seconds:.2f} s): {answer.text!r}")

    report = {
        "device": devices.describe(device, gpus),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "preset": SMALL,
        "peak_matmul_flops": peak,
        "peak_dtype": str(dtype),
        "runs": runs,
        "sample_and_rank": {
            "seconds": respond_seconds,
            "candidates": len(answer.candidates),
            "answer": answer.text,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    metrics = [Metric("gpu-check: matmul peak", peak / 1e12, f"TFLOP/s {dtype}")]
    for run in runs:
        name = f"gpu-check: {run['device']}"
        metrics += [
            Metric(f"{name} tokens/s", run["tokens_per_second"], "tokens/s"),
            Metric(f"{name} MFU", (run["mfu"] or 0) * 100, "%"),
            Metric(f"{name} peak memory", run["peak_memory_mib"], "MiB"),
        ]
    metrics.append(Metric("gpu-check: sample-and-rank", respond_seconds, "s"))
    print()
    print_table(metrics)
    say(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
