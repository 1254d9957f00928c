"""The training loop and the evaluation, nanoGPT-plain: a loop over steps, no Trainer framework.

Pure torch (no Django): the Celery task in ``trainer.services.training_jobs`` gives it examples, a
place for checkpoints and a ``report`` callback that stores progress and says whether to go on.

- Examples are ``(ids, loss_mask)`` pairs (``trainer.formats``). A batch is padded on the right
  with ``<pad>`` and labels are ``-100`` wherever the mask is 0, so padding costs no loss; a causal
  model never looks right, so right padding needs no attention mask. Examples longer than
  ``max_length`` keep their end, where the loss is.
- Batch ``s`` is drawn by a generator seeded with ``(seed, s)``: a run resumed from a checkpoint
  at step ``s`` sees exactly the batches the lost run would have seen.
- AdamW, linear warm-up then cosine decay to 10 %, gradient clipping at 1.0, bf16 autocast when
  ``bf16`` (master weights stay fp32). Unset, it is on only where the device that trains computes
  bf16 in hardware (``trainer.devices.uses_bf16``): a CUDA card that has it, a CPU with AVX-512 BF16
  or AMX (AMX made training about 1.5x faster; an AVX2-only machine, which emulates it, trained at
  about 30 tokens/s with it instead of thousands without). It is decided when training starts, on
  the worker, not when the web process queues the job.
- A checkpoint (weights, optimizer, scheduler, step, loss history, and the tokens and seconds
  trained so far, for the run's average tokens/s) is written atomically (temp file, then rename)
  every ``checkpoint_every`` steps.
- Data-parallel (``hp.world_size`` > 1, in a process group ``trainer.distributed`` starts): every
  rank draws the same global batch and takes its ``batch_size / world_size`` rows; each rank's loss
  is its sum over its tokens divided by the global batch's count of loss tokens (known to every
  rank, which saw the whole batch), times the world size, so the gradients DDP averages are those
  of the 1-process mean loss. Only rank 0 reports, checkpoints and keeps the result; its answer
  to ``report`` (go on or cancel) is broadcast to every rank after each step. With
  ``world_size`` 1 none of this runs: no process group, no DDP wrapper.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainer import devices
from trainer.devices import BF16_IN_HARDWARE, bf16_in_hardware
from trainer.hyperparameters import Hyperparameters

Pair = tuple[Sequence[int], Sequence[int]]
# A training objective of its own: (model, a batch of examples, device) -> (loss, tokens in the batch).
Objective = Callable[[nn.Module, Sequence[Any], torch.device], tuple[torch.Tensor, int]]
CHECKPOINT = "checkpoint.pt"

__all__ = ["BF16_IN_HARDWARE", "bf16_in_hardware"]  # where bench/ and the tests read them


def uses_bf16(hp: Hyperparameters) -> bool:
    """Whether training on the CPU autocasts to bf16: as set, else where this CPU computes it."""
    return devices.uses_bf16(torch.device("cpu"), hp.bf16)


@dataclass
class Progress:
    step: int
    total_steps: int
    loss: float
    tokens_per_second: float  # over the latest interval between reports
    history: list[list[float]]
    # Over the whole run: the tokens of every step the model kept, over the seconds they took
    # (summed across resumes through the checkpoint).
    average_tokens_per_second: float = 0.0


class Cancelled(Exception):
    """The report callback asked the loop to stop."""


def collate(batch: Sequence[Pair], pad_id: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, labels)`` of shape (B, T): right-padded, labels -100 where the mask is 0."""
    rows = [(list(ids)[-max_length:], list(mask)[-max_length:]) for ids, mask in batch]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for row, (ids, mask) in enumerate(rows):
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = tokens
        labels[row, : len(ids)] = torch.where(torch.tensor(mask, dtype=torch.bool), tokens, -100)
    return input_ids, labels


def _batch_indices(n: int, hp: Hyperparameters, step: int) -> list[int]:
    generator = torch.Generator().manual_seed(hp.seed * 1_000_003 + step)
    return torch.randint(n, (hp.batch_size,), generator=generator).tolist()


def _lr_factor(hp: Hyperparameters) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < hp.warmup_steps:
            return (step + 1) / hp.warmup_steps
        progress = (step - hp.warmup_steps) / max(1, hp.steps - hp.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    path = directory / CHECKPOINT
    if not path.exists():
        return None
    # Tensors, numbers and lists only: unpickling anything else could run code from the file.
    return torch.load(path, map_location="cpu", weights_only=True)


def train(
    model: nn.Module,
    examples: Sequence[Pair],
    hp: Hyperparameters,
    *,
    pad_id: int,
    checkpoint_dir: Path,
    report: Callable[[Progress], bool],
    on_checkpoint: Callable[[int], None] = lambda step: None,
    device: torch.device | None = None,
    objective: Objective | None = None,
    dropout: bool = True,
) -> Progress:
    """Train ``model`` in place on ``device`` (the CPU when None; the model moves there and stays)
    for ``hp.steps`` steps, resuming from ``checkpoint_dir`` if a checkpoint is there. ``report``
    is called every ``hp.report_every`` seconds and at the end; when it returns False the loop
    raises :class:`Cancelled` (the checkpoint stays). With ``hp.world_size`` > 1 this runs in every
    rank of a process group (``trainer.distributed``); only rank 0 reports and checkpoints.

    The loss is the next-token loss of the ``(ids, loss_mask)`` examples, or what ``objective``
    makes of a batch of ``examples`` (whatever they are): ``(loss, tokens)`` from the model, the
    batch and the device, under autocast (DPO's, ``trainer.preference_training``; one process
    only). ``dropout`` False trains with dropout off (the model in eval mode).

    What the loop draws at random (dropout) comes from a forked RNG seeded with ``hp.seed``: the
    worker's global RNG state neither changes the run nor is changed by it."""
    if not examples:
        raise ValueError("no training examples")
    device = device or torch.device("cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(hp.seed)
        return _train(
            model,
            examples,
            hp,
            pad_id=pad_id,
            checkpoint_dir=checkpoint_dir,
            report=report,
            on_checkpoint=on_checkpoint,
            device=device,
            objective=objective,
            dropout=dropout,
        )


def _train(
    model: nn.Module,
    examples: Sequence[Pair],
    hp: Hyperparameters,
    *,
    pad_id: int,
    checkpoint_dir: Path,
    report: Callable[[Progress], bool],
    on_checkpoint: Callable[[int], None],
    device: torch.device,
    objective: Objective | None,
    dropout: bool,
) -> Progress:
    rank, world = (dist.get_rank(), dist.get_world_size()) if hp.world_size > 1 else (0, 1)
    if world != hp.world_size:
        raise RuntimeError(f"world_size {hp.world_size}, but the process group has {world} processes")
    if objective is not None and world > 1:
        raise ValueError("a training objective of its own runs in one process (world_size 1)")
    model.to(device)
    model.train(dropout)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hp.learning_rate,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(hp))
    history: list[list[float]] = []
    step, tokens, seconds_before = 0, 0, 0.0
    state = load_checkpoint(checkpoint_dir)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = state["step"], state["history"]
        tokens, seconds_before = state.get("tokens", 0), state.get("seconds", 0.0)
    network = model if world == 1 else _data_parallel(model, device)
    bf16 = devices.uses_bf16(device, hp.bf16)
    share = hp.batch_size // world

    started = last_report = window_start = time.monotonic()
    window_tokens = 0

    def average(now: float) -> float:
        return tokens / max(seconds_before + now - started, 1e-9)

    progress = Progress(
        step, hp.steps, history[-1][1] if history else math.nan, 0.0, history, average(started)
    )
    while step < hp.steps:
        batch = [examples[i] for i in _batch_indices(len(examples), hp, step)]
        mine = batch if world == 1 else batch[rank * share : (rank + 1) * share]
        if objective is not None:
            with devices.autocast(device, bf16):
                loss, step_tokens = objective(network, mine, device)
        else:
            input_ids, labels = collate(mine, pad_id, hp.max_length)
            input_ids, labels = input_ids.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with devices.autocast(device, bf16):
                if world == 1:
                    loss = network(input_ids, labels=labels, use_cache=False).loss
                else:
                    loss = _shard_loss(network, input_ids, labels, _loss_tokens(batch, hp.max_length), world)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        step += 1
        if objective is not None:
            step_loss = float(loss.detach())
        elif world == 1:
            step_loss, step_tokens = float(loss.detach()), int((input_ids != pad_id).sum())
        else:
            step_loss, step_tokens = _reduce(loss, input_ids != pad_id, world)
        window_tokens += step_tokens
        tokens += step_tokens
        history.append([step, round(step_loss, 5)])

        if rank == 0 and (step % hp.checkpoint_every == 0 or step == hp.steps):
            _save(
                checkpoint_dir / CHECKPOINT,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "history": history,
                    "tokens": tokens,
                    "seconds": seconds_before + time.monotonic() - started,
                },
            )
            on_checkpoint(step)
        now = time.monotonic()
        go_on = True
        if rank == 0 and (now - last_report >= hp.report_every or step == hp.steps):
            interval = window_tokens / max(now - window_start, 1e-9)
            progress = Progress(step, hp.steps, step_loss, interval, history, average(now))
            go_on = report(progress)
            last_report, window_tokens, window_start = now, 0, now
        if world > 1:
            go_on = _agree(go_on, device)
        if not go_on:
            raise Cancelled(f"cancelled at step {step}")
    model.eval()
    return progress


# --- data-parallel steps (world_size > 1; the processes are started by trainer.distributed) ------


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DDP: rank 0's weights are broadcast to every rank here, and gradients
    are averaged over the ranks in ``backward``."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _loss_tokens(batch: Sequence[Pair], max_length: int) -> int:
    """How many positions of the global ``batch`` carry a loss (as ``collate`` and the model's
    shifted labels count them: mask set, after the first of the kept ids)."""
    return sum(sum(1 for m in list(mask)[-max_length:][1:] if m) for _, mask in batch)


def _shard_loss(
    network: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, loss_tokens: int, world: int
) -> torch.Tensor:
    """This rank's share of the global batch's mean loss, times ``world`` (DDP divides the summed
    gradients by it): the sum over its tokens over the global count. A rank with no loss tokens
    still takes part in the gradients' all-reduce (its loss is 0 with a graph)."""
    logits = network(input_ids, use_cache=False).logits
    shifted = F.pad(labels, (0, 1), value=-100)[:, 1:]
    total = F.cross_entropy(
        logits.float().view(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return total * (world / max(loss_tokens, 1))


def _reduce(loss: torch.Tensor, real: torch.Tensor, world: int) -> tuple[float, int]:
    """The global batch's mean loss and its tokens (not padding), summed over the ranks."""
    stats = torch.stack([loss.detach().float(), real.sum().float()])
    dist.all_reduce(stats)
    return float(stats[0]) / world, int(stats[1])


def _agree(go_on: bool, device: torch.device) -> bool:
    """Rank 0's word (go on, or stop: cancelled) for every rank."""
    flag = torch.tensor([int(go_on)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def mix_indices(available: int, share: float, seed: int) -> list[int]:
    """Which of ``available`` examples a fine-tune mixes into its own: ``share`` of them (rounded
    half up), drawn without replacement by a generator of its own seeded with ``seed``, so every
    run and every resume of a job mixes the same ones; in ascending order."""
    count = min(available, math.floor(share * available + 0.5))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(available, generator=generator)[:count].tolist())


# --- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rated:
    """A discriminative validation example: ``ids`` ends with the attribute token then the rating."""

    attribute: str
    label: int
    ids: Sequence[int]


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (Mann-Whitney U, ties count half); None with a single class."""
    positives = sum(1 for label in labels if label == 1)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return None
    ranked = sorted(zip(scores, labels, strict=True))
    rank_sum, index = 0.0, 0
    while index < len(ranked):
        end = index
        while end + 1 < len(ranked) and ranked[end + 1][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for _, label in ranked[index : end + 1] if label == 1)
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@torch.no_grad()
def mean_loss(
    model: nn.Module, examples: Sequence[Pair], *, pad_id: int, max_length: int, batch_size: int = 32
) -> float:
    """Mean next-token loss over every masked position of ``examples`` (NaN when there are none)."""
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        input_ids, labels = collate(examples[start : start + batch_size], pad_id, max_length)
        input_ids, labels = input_ids.to(device), labels.to(device)
        logits = model(input_ids, use_cache=False).logits[:, :-1].float()
        targets = labels[:, 1:]
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((targets != -100).sum())
    return total / count if count else math.nan


@torch.no_grad()
def rating_probabilities(
    model: nn.Module,
    prefixes: Sequence[Sequence[int]],
    *,
    zero_id: int,
    one_id: int,
    pad_id: int,
    max_length: int,
) -> list[float]:
    """P(``<1>``) against ``<0>`` after each prefix (which ends with an attribute token)."""
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(prefixes), 32):
        chunk = [list(p)[-max_length:] for p in prefixes[start : start + 32]]
        input_ids, _ = collate([(ids, [0] * len(ids)) for ids in chunk], pad_id, max_length)
        logits = model(input_ids.to(device), use_cache=False).logits.float()
        last = torch.tensor([len(ids) - 1 for ids in chunk], device=device)
        pair = logits[torch.arange(len(chunk), device=device), last][:, [zero_id, one_id]]
        out.extend(torch.softmax(pair, dim=-1)[:, 1].tolist())
    return out


def evaluate(
    model: nn.Module,
    pairs: Sequence[Pair],
    rated: Sequence[Rated],
    *,
    pad_id: int,
    zero_id: int,
    one_id: int,
    max_length: int,
) -> dict[str, Any]:
    """``{"validation_loss", "validation_examples", "attributes": {NAME: {n, accuracy, auc}}}``."""
    metrics: dict[str, Any] = {
        "validation_examples": len(pairs),
        "validation_loss": mean_loss(model, pairs, pad_id=pad_id, max_length=max_length) if pairs else None,
        "attributes": {},
    }
    if rated:
        probabilities = rating_probabilities(
            model,
            [r.ids[:-1] for r in rated],
            zero_id=zero_id,
            one_id=one_id,
            pad_id=pad_id,
            max_length=max_length,
        )
        for attribute in sorted({r.attribute for r in rated}):
            chosen = [
                (p, r.label) for p, r in zip(probabilities, rated, strict=True) if r.attribute == attribute
            ]
            scores, labels = [p for p, _ in chosen], [label for _, label in chosen]
            metrics["attributes"][attribute] = {
                "n": len(chosen),
                "accuracy": sum(1 for p, label in chosen if (p >= 0.5) == (label == 1)) / len(chosen),
                "auc": auc(scores, labels),
            }
    if metrics["validation_loss"] is not None and math.isnan(metrics["validation_loss"]):
        metrics["validation_loss"] = None
    return metrics
