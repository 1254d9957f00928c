"""Benchmark of the trainer (``make bench``, after the search benchmark; parts ``train`` and ``export``).

Neither part needs a database or Django.

``train``: training throughput of ``trainer.modeling.GroundworkForCausalLM`` against transformers'
``GPT2LMHeadModel`` of the same width, depth, heads, vocabulary (8192) and context (256). Our
gated-GELU feed-forward gets ``d_ff = round(8/3 d_model)`` (the GroundworkConfig default), so its
three matrices hold as many weights, and cost as many FLOPs, as GPT-2's two of 4 d_model; GPT-2
keeps its biases and learned positions (a lookup): both parameter counts are in the table. Both
start with their own ``_init_weights`` (std 0.02), dropout 0, tied embeddings, SDPA attention,
no key/value cache. Each step is one batch of 16 x 256 random ids (the same batches for both, the
labels the ids), forward and loss under ``torch.autocast("cpu", dtype=torch.bfloat16)`` where the CPU
computes bf16 in hardware (``trainer.training.BF16_IN_HARDWARE``, as training does), backward,
``AdamW(lr=3e-4)`` step. Steps alternate between the models (A B B A A B ...) so that drift of the
machine hits both alike; the warm-up steps are not counted, and the figure of each model is the
median tokens/s of its timed steps. torch uses as many threads as this process may use CPUs, and
flushes denormal floats to zero (they halve the speed) for both. The share of the machine's CPU that
other processes took meanwhile (from /proc) is reported too: above 10 %, the figures are disturbed.
Then model FLOPs utilisation (``bench.mfu``): this machine's matmul peak in fp32 (and bf16 when
training autocasts to it), measured in the same run, and the MFU of ours (the default, "tiny") at
its tokens/s above and of the "small" preset (36M parameters; a few steps of 4 x 256 tokens).

``ddp``: DDP scaling efficiency of 2 gloo processes against 1 (``bench/ddp_bench.py``).

``export``: ``trainer.records.DatasetWriter`` writing synthetic discriminative examples (a context
of 3 turns of about 60 characters, a response, the rendered text, about 80 ``input_ids`` and their
``loss_mask``, an attribute and a label, the split from ``records.split_of``; seeded, every row
different) to JSONL and Parquet in a throw-away folder under var/bench/, then ``files()`` (sha256
of every file). Each size (100k and 1M examples; 10k and 100k with ``--quick``) runs in a fresh
child process (this module with ``--child-export``), which makes its rows in batches as it goes
(time not counted) and reports, as JSON, the seconds of ``add``/``close``/``files()`` and its peak
resident memory, VmHWM of /proc/self/status: examples/s of the writer, the peak per size and the
ratio of the peaks (goal ≤ 1.2: memory must not grow with the dataset). Not ``ru_maxrss``: Linux
keeps it across fork and exec, so a child of this process (torch loaded, after ``train``) would
report the parent's peak; VmHWM belongs to the child's own address space.

The table is printed and the figures merged into var/bench/results.json. Arguments this script
does not know (the other benchmarks') are ignored, and so are parts other than ``train``,
``export`` and ``ddp``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.cpu import machine_busy_seconds, self_seconds
from bench.ddp_bench import bench_ddp
from bench.mfu import bench_mfu
from bench.report import ROOT, Metric, finish, say

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

PARTS = ("train", "export", "ddp")
PREFIXES = {"train": "train: ", "export": "export: ", "ddp": "ddp: "}
WALL = "trainer_bench.wall_s"
SEED = 20261128
WORK_DIR = ROOT / "var" / "bench"

# train
BATCH = 16
CONTEXT = 256
LEARNING_RATE = 3e-4
OURS = "ours"
GPT2 = "GPT2LMHeadModel"

# export: special tokens as trainer.tokenizer spells them (not imported: it would load transformers
# into the child and hide the writer's memory under the library's)
ATTRIBUTES = ("SENSIBLE", "SPECIFIC", "INTERESTING", "UNSAFE", "CORRECT")
SPEAKERS = ("user", "model", "user")
VALIDATION_PERCENT = 10
EXPORT_SIZES = {"100k": 100_000, "1M": 1_000_000}
QUICK_EXPORT_SIZES = {"10k": 10_000, "100k": 100_000}
ROW_BATCH = 2_000
_STOPWORD_TEXT = (
    "the of and to a in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will"
)
_STOPWORDS = _STOPWORD_TEXT.split()
_CONSONANTS = [*"bcdfghklmnprstvz", "ch", "sh", "th", "st", "tr", "br", "pl", "gr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]


# --------------------------------------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainPlan:
    warmup: int  # steps per model not counted
    steps: int  # steps per model timed


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _models() -> dict[str, PreTrainedModel]:
    """Our model with the GroundworkConfig defaults, and GPT-2 of the same sizes."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from trainer.modeling import GroundworkConfig, GroundworkForCausalLM

    defaults = GroundworkConfig()
    d_model = defaults.d_model
    # Gated GELU: wi_0, wi_1 (d x d_ff) and wo (d_ff x d) hold 3 d d_ff weights; GPT-2's MLP holds
    # 2 x 4 d^2 = 8 d^2. Equal at d_ff = 8/3 d (683 for 256, the default).
    d_ff = round(8 * d_model / 3)
    ours_config = GroundworkConfig(d_ff=d_ff, dropout=0.0, use_cache=False)
    gpt2_config = GPT2Config(
        vocab_size=ours_config.vocab_size,
        n_positions=CONTEXT,
        n_embd=d_model,
        n_layer=ours_config.n_layer,
        n_head=ours_config.n_head,
        n_inner=None,  # 4 * n_embd
        activation_function="gelu_new",  # the tanh approximation, as our gelu(approximate="tanh")
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=ours_config.layer_norm_epsilon,
        initializer_range=ours_config.initializer_range,
        bos_token_id=0,  # GPT-2's 50256 lies outside a vocabulary of 8192
        eos_token_id=0,
        tie_word_embeddings=True,
        use_cache=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(SEED)
    ours = GroundworkForCausalLM(ours_config)
    torch.manual_seed(SEED)
    gpt2 = GPT2LMHeadModel(gpt2_config)
    gpt2.loss_type = "ForCausalLM"  # what it falls back to anyway, without a warning
    return {OURS: ours, GPT2: gpt2}


def _parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())  # tied weights count once


def _train_step(
    model: PreTrainedModel, optimizer: torch.optim.Optimizer, ids: torch.Tensor, *, bf16: bool
) -> tuple[float, float]:
    """One optimiser step; the seconds it took and the loss."""
    import torch

    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return seconds, loss.detach().item()


def bench_train(plan: TrainPlan, small: TrainPlan) -> list[Metric]:
    """Ours against GPT-2 (``plan``), then the MFU of ours and of the small preset (``small``)."""
    import torch

    from trainer.training import BF16_IN_HARDWARE

    threads = _threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    models = _models()
    optimizers = {
        name: torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE) for name, model in models.items()
    }
    parameters = {name: _parameters(model) for name, model in models.items()}
    ours = models[OURS].config
    say(
        f"train: d_model {ours.d_model}, {ours.n_layer} layers, {ours.n_head} heads, vocabulary "
        f"{ours.vocab_size}, our d_ff {ours.d_ff} vs GPT-2's {4 * ours.d_model}; batch {BATCH} x {CONTEXT} "
        f"tokens, {'bf16 autocast' if BF16_IN_HARDWARE else 'fp32 (no bf16 in this CPU)'}, "
        f"AdamW lr {LEARNING_RATE}, {threads} threads, torch {torch.__version__}"
    )
    for name, model in models.items():
        embedding = model.get_input_embeddings().weight.detach()
        say(
            f"  {name}: {parameters[name]:,} parameters, embedding std {float(embedding.std()):.4f}, "
            f"attention {model.config._attn_implementation}"
        )
        model.train()

    generator = torch.Generator().manual_seed(SEED)
    total = plan.warmup + plan.steps
    batches = [torch.randint(0, ours.vocab_size, (BATCH, CONTEXT), generator=generator) for _ in range(total)]
    say(f"  {plan.warmup} warm-up steps, then {plan.steps} timed, per model, alternating")
    timings: dict[str, list[float]] = {name: [] for name in models}
    losses: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    gc.collect()
    busy, own, started = machine_busy_seconds(), self_seconds(), time.monotonic()
    for step, ids in enumerate(batches):
        for name in names if step % 2 == 0 else reversed(names):  # A B B A A B ...
            seconds, loss = _train_step(models[name], optimizers[name], ids, bf16=BF16_IN_HARDWARE)
            losses[name].append(loss)
            if step >= plan.warmup:
                timings[name].append(seconds)

    # Another program on the machine slows both models, not always alike: say how much CPU it took.
    others = max(0.0, (machine_busy_seconds() - busy) - (self_seconds() - own))
    share = others / ((time.monotonic() - started) * (os.cpu_count() or 1))
    say(
        f"  other processes took {others:.0f} CPU-s meanwhile, {share:.0%} of the machine"
        + (": the figures are disturbed, run again on a quiet machine" if share > 0.1 else "")
    )
    tokens = BATCH * CONTEXT
    rates: dict[str, float] = {}
    metrics: list[Metric] = []
    for name, seconds in timings.items():
        rates[name] = tokens / statistics.median(seconds)
        if not all(np.isfinite(losses[name])):
            raise RuntimeError(f"{name}: a loss was not finite: {losses[name]}")
        say(
            f"  {name}: median {statistics.median(seconds) * 1000:.0f} ms a step "
            f"(min {min(seconds) * 1000:.0f}, max {max(seconds) * 1000:.0f}): {rates[name]:,.0f} tokens/s; "
            f"loss {losses[name][0]:.2f} -> "
            f"{losses[name][-1]:.2f}"
        )
        metrics.append(Metric(f"train: {name} tokens/s", rates[name], "tokens/s"))
    metrics.append(Metric(f"train: {OURS} / GPT2 ratio", rates[OURS] / rates[GPT2], "x", "≥ 1.0"))
    for name, count in parameters.items():
        metrics.append(Metric(f"train: {name} parameters", count, "parameters"))
    metrics.append(Metric("train: tokens per step", tokens, "tokens"))
    metrics.append(Metric("train: CPU taken by other processes", share * 100, "%"))
    metrics += bench_mfu(
        ours_config=ours,
        ours_tokens_per_second=rates[OURS],
        context=CONTEXT,
        bf16=BF16_IN_HARDWARE,
        warmup=small.warmup,
        steps=small.steps,
        seed=SEED,
    )
    return metrics


# -------------------------------------------------------------------------------------------- export


class RowMaker:
    """Synthetic discriminative examples as ``trainer.records.SCHEMA`` rows; seeded, each different."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        words = list(_STOPWORDS)
        seen = set(words)
        while len(words) < 20_000:
            syllables = int(self.rng.integers(1, 4))
            word = "".join(
                _CONSONANTS[int(self.rng.integers(len(_CONSONANTS)))]
                + _VOWELS[int(self.rng.integers(len(_VOWELS)))]
                for _ in range(syllables)
            )
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        weights = 1.0 / np.arange(1, len(words) + 1) ** 1.07
        self.cumulative = np.cumsum(weights / weights.sum())

    def _texts(self, count: int) -> list[str]:
        """``count`` sentences of 8-13 words (about 60 characters)."""
        lengths = self.rng.integers(8, 14, count).tolist()
        ranks = np.searchsorted(self.cumulative, self.rng.random(sum(lengths)), side="right")
        drawn = [self.words[rank] for rank in np.minimum(ranks, len(self.words) - 1).tolist()]
        texts = []
        at = 0
        for length in lengths:
            sentence = " ".join(drawn[at : at + length])
            at += length
            texts.append(sentence[:1].upper() + sentence[1:] + ".")
        return texts

    def batches(self, count: int, timing: list[float]) -> Iterator[list[dict[str, Any]]]:
        """``count`` rows in batches of ``ROW_BATCH``; the seconds spent making them are added to
        ``timing[0]``."""
        from trainer.records import split_of

        for start in range(0, count, ROW_BATCH):
            started = time.perf_counter()
            size = min(ROW_BATCH, count - start)
            texts = self._texts(4 * size)  # 3 context turns and the response
            lengths = self.rng.integers(65, 96, size).tolist()
            ids = self.rng.integers(40, 8192, sum(lengths), dtype=np.int32).tolist()
            attributes = self.rng.integers(0, len(ATTRIBUTES), size).tolist()
            soft = self.rng.integers(0, 6, size) / 5  # 5 raters
            rows = []
            at = 0
            for offset in range(size):
                number = start + offset
                attribute = ATTRIBUTES[attributes[offset]]
                label = int(soft[offset] >= 0.5)
                turns = texts[4 * offset : 4 * offset + 4]
                context = [
                    {"speaker": speaker, "text": text} for speaker, text in zip(SPEAKERS, turns, strict=False)
                ]
                dialog = f"dialog-{number // 8}"
                rendered = "".join(f"<{turn['speaker']}> {turn['text']}" for turn in context)
                length = lengths[offset]
                rows.append(
                    {
                        "id": f"item-{number}-{attribute}",
                        "split": split_of(dialog, VALIDATION_PERCENT),
                        "kind": "discriminative",
                        "attribute": attribute,
                        "label": label,
                        "soft_label": float(soft[offset]),
                        "dialog": dialog,
                        "context": context,
                        "response": turns[3],
                        "research": [],
                        "outcome_speaker": None,
                        "outcome": None,
                        "text": f"{rendered}<sentinel> {turns[3]}<{attribute}><{label}>",
                        "input_ids": ids[at : at + length],
                        "loss_mask": [0] * (length - 1) + [1],  # the rating token only
                    }
                )
                at += length
            timing[0] += time.perf_counter() - started
            yield rows


def _status_mib(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def export_child(count: int, folder: Path) -> dict[str, Any]:
    """Run in a fresh process: ``count`` rows through a DatasetWriter in ``folder``."""
    from trainer.records import DatasetWriter

    maker = RowMaker()
    gc.collect()
    baseline = _status_mib("VmRSS")
    making = [0.0]
    adding = 0.0
    writer = DatasetWriter(folder)
    for rows in maker.batches(count, making):
        started = time.perf_counter()
        for row in rows:
            writer.add(row)
        adding += time.perf_counter() - started
    started = time.perf_counter()
    writer.close()
    closing = time.perf_counter() - started
    started = time.perf_counter()
    files = writer.files()
    hashing = time.perf_counter() - started
    if sum(writer.rows.values()) != count:
        raise RuntimeError(f"the writer counted {writer.rows}, not {count} rows")
    # ru_maxrss (kB on Linux) is inherited across fork and exec: the parent's peak, when larger.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hwm = _status_mib("VmHWM")
    return {
        "count": count,
        "rows": writer.rows,
        "making_s": making[0],
        "add_s": adding,
        "close_s": closing,
        "files_s": hashing,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": maxrss if hwm is None else hwm,
        "ru_maxrss_mib": maxrss,
        "bytes": {name: entry["bytes"] for name, entry in files.items()},
    }


def _run_child(count: int, folder: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.trainer_bench",
        "--child-export",
        str(count),
        "--child-dir",
        str(folder),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise RuntimeError(
            f"export child of {count:,} rows failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_export(sizes: dict[str, int]) -> list[Metric]:
    say(
        "export: DatasetWriter (JSONL + Parquet, then sha256 of the files) of "
        + " and ".join(f"{count:,}" for count in sizes.values())
        + " synthetic discriminative examples, each size in a fresh process"
    )
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    metrics: list[Metric] = []
    peaks: dict[str, float] = {}
    for label, count in sizes.items():
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=WORK_DIR))
        try:
            result = _run_child(count, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        writing = result["add_s"] + result["close_s"] + result["files_s"]
        rate = count / writing
        peaks[label] = result["peak_rss_mib"]
        size = sum(result["bytes"].values())
        say(
            f"  {label}: add {result['add_s']:.1f} s, close {result['close_s']:.2f} s, files() "
            f"{result['files_s']:.1f} s: {rate:,.0f} examples/s (rows made beforehand in "
            f"{result['making_s']:.1f} s, not counted); {size / 2**20:,.0f} MiB on disk "
            f"({result['rows']['validation']:,} validation); RSS {result['baseline_rss_mib']:.0f} MiB "
            f"before writing, peak {result['peak_rss_mib']:.0f} MiB (VmHWM; ru_maxrss says "
            f"{result['ru_maxrss_mib']:.0f})"
        )
        say(f"  removed {folder.relative_to(ROOT)}")
        metrics.append(Metric(f"export: {label} examples/s", rate, "examples/s"))
        metrics.append(Metric(f"export: peak RSS {label}", result["peak_rss_mib"], "MiB"))
    labels = list(sizes)
    small, big = labels[0], labels[-1]
    if small != big:
        metrics.append(
            Metric(f"export: peak memory ratio {big} / {small}", peaks[big] / peaks[small], "x", "≤ 1.2")
        )
    return metrics


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated; runs those of {', '.join(PARTS)} it names"
    )
    parser.add_argument("--quick", action="store_true", help="fewer training steps, exports of 10k and 100k")
    parser.add_argument("--child-export", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-dir", type=Path, help=argparse.SUPPRESS)
    args, _others = parser.parse_known_args(argv)  # the other benchmarks' arguments
    if args.child_export is not None:
        print(json.dumps(export_child(args.child_export, args.child_dir)), flush=True)
        return 0
    named = [part.strip() for part in args.parts.split(",") if part.strip()]
    parts = [part for part in PARTS if part in named]
    if not parts:
        say(f"trainer benchmark skipped (--parts {args.parts} names none of {', '.join(PARTS)})")
        return 0

    started = time.monotonic()
    metrics: list[Metric] = []
    if "train" in parts:
        metrics += bench_train(
            TrainPlan(warmup=2, steps=4) if args.quick else TrainPlan(warmup=3, steps=20),
            small=TrainPlan(warmup=1, steps=2) if args.quick else TrainPlan(warmup=1, steps=3),
        )
    if "export" in parts:
        metrics += bench_export(QUICK_EXPORT_SIZES if args.quick else EXPORT_SIZES)
    if "ddp" in parts:  # DDP scaling, 2 gloo processes vs 1 (bench/ddp_bench.py)
        plan = {"warmup": 1, "steps": 3} if args.quick else {"warmup": 2, "steps": 10}
        metrics += bench_ddp(**plan, threads=_threads())
    metrics.append(Metric(WALL, time.monotonic() - started, "s"))
    finish(metrics, replace=[*(PREFIXES[part] for part in parts), WALL])
    return 0


if __name__ == "__main__":
    sys.exit(main())
