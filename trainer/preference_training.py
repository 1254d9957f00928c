"""Direct preference optimisation (DPO; Rafailov et al. 2023), in ``trainer.training``'s plain loop.

Pure torch (no Django): ``trainer.services.preference_jobs`` gives it the pairs of ``preference``
datasets, a reference model, a place for checkpoints and the ``report`` callback.

- A pair is rendered as two generative examples (``trainer.formats`` rule 4) of the same prompt,
  ``CONTEXT<sentinel> chosen<eos>`` and ``CONTEXT<sentinel> rejected<eos>``: log π(y | x) is the
  sum of the log-probabilities of the response tokens and ``<eos>`` (the loss mask).
- Loss: −log σ(β [(log πθ(c) − log πref(c)) − (log πθ(r) − log πref(r))]), β ``hp.dpo_beta``
  (0.1 by default), the reference πref the base model, frozen.
- Trained by ``training.train``'s loop itself, with this loss as its ``objective``: batch ``s``
  drawn with ``(seed, s)`` (a resumed run sees the same batches), AdamW with warm-up then cosine
  decay, clipping at 1.0, atomic checkpoints, progress reports and cancelling, on the job's device
  (one process). Dropout is off in both models (as TRL's ``disable_dropout``): the implicit
  reward of a pair is then the same number each time it is computed.

Why not TRL's ``DPOTrainer`` (1.16 installs; it was checked): it tokenizes conversational data
through the tokenizer's chat template, which would have to re-implement ``trainer.formats``; its
``Trainer`` loop keeps its own checkpoints, seeds and logging, where a job here must resume on
another worker from its checkpoint, report to its row and stop when cancelled; and it would add
accelerate and TRL to the pinned dependencies for about a hundred lines of loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainer import formats, training
from trainer.hyperparameters import Hyperparameters

Example = tuple[Sequence[int], Sequence[int]]  # (ids, loss_mask), as training.Pair


@dataclass(frozen=True)
class PreferencePair:
    chosen: Example
    rejected: Example


def render(tokenizer: Any, prompt: Sequence[dict[str, str]], chosen: str, rejected: str) -> PreferencePair:
    """A pair of conversational messages (a preference dataset's row) as two generative examples."""
    context = [("user" if m["role"] == "user" else "model", m["content"]) for m in prompt]
    c = formats.generative(tokenizer, context, chosen)
    r = formats.generative(tokenizer, context, rejected)
    return PreferencePair((c.ids, c.loss_mask), (r.ids, r.loss_mask))


def sequence_logps(
    model: nn.Module, examples: Sequence[Example], *, pad_id: int, max_length: int
) -> torch.Tensor:
    """log π(response | prompt) of each example: the summed log-probabilities of its masked tokens."""
    input_ids, labels = training.collate(examples, pad_id, max_length)
    device = next(model.parameters()).device
    input_ids, labels = input_ids.to(device), labels.to(device)
    logits = model(input_ids, use_cache=False).logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != -100
    picked = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean DPO loss, each pair's implicit reward margin β[(Δchosen) − (Δrejected)])."""
    margins = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margins).mean(), margins


def _logps(
    model: nn.Module, pairs: Sequence[PreferencePair], hp: Hyperparameters, pad_id: int
) -> torch.Tensor:
    """(2, B): log π of the chosen and of the rejected responses, in one forward pass."""
    examples = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    logps = sequence_logps(model, examples, pad_id=pad_id, max_length=hp.max_length)
    return logps.view(2, len(pairs))


@torch.no_grad()
def preference_metrics(
    model: nn.Module,
    reference: nn.Module,
    pairs: Sequence[PreferencePair],
    hp: Hyperparameters,
    *,
    pad_id: int,
) -> dict[str, Any]:
    """On ``pairs``: ``pairs``; ``dpo_loss``; ``reward_accuracy`` (the share whose implicit reward
    margin is positive); ``reward_margin`` (its mean); ``logp_margin``, the mean of
    log π(chosen) − log π(rejected) under ``model`` (None for no pairs)."""
    model.eval()
    if not pairs:
        return {
            "pairs": 0,
            "dpo_loss": None,
            "reward_accuracy": None,
            "reward_margin": None,
            "logp_margin": None,
        }
    loss_sum, margins, logp_margins = 0.0, [], []
    for start in range(0, len(pairs), 32):
        chunk = pairs[start : start + 32]
        policy, ref = _logps(model, chunk, hp, pad_id), _logps(reference, chunk, hp, pad_id)
        loss, margin = dpo_loss(policy[0], policy[1], ref[0], ref[1], hp.dpo_beta)
        loss_sum += float(loss) * len(chunk)
        margins += margin.tolist()
        logp_margins += (policy[0] - policy[1]).tolist()
    return {
        "pairs": len(pairs),
        "dpo_loss": loss_sum / len(pairs),
        "reward_accuracy": sum(1 for m in margins if m > 0) / len(margins),
        "reward_margin": sum(margins) / len(margins),
        "logp_margin": sum(logp_margins) / len(logp_margins),
    }


def train_dpo(
    model: nn.Module,
    reference: nn.Module,
    pairs: Sequence[PreferencePair],
    hp: Hyperparameters,
    *,
    pad_id: int,
    checkpoint_dir: Path,
    report: Callable[[training.Progress], bool],
    on_checkpoint: Callable[[int], None] = lambda step: None,
    device: torch.device | None = None,
) -> training.Progress:
    """Train ``model`` in place for ``hp.steps`` DPO steps against the frozen ``reference``, on
    ``device``: ``training.train``'s loop (its batches, schedule, checkpoints, reports and resume)
    with the DPO loss as its objective and dropout off."""
    if not pairs:
        raise ValueError("no training pairs")
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    reference.to(device or torch.device("cpu"))

    def objective(
        network: nn.Module, batch: Sequence[PreferencePair], _: torch.device
    ) -> tuple[torch.Tensor, int]:
        with torch.no_grad():
            ref = _logps(reference, batch, hp, pad_id)
        policy = _logps(network, batch, hp, pad_id)
        loss, _margins = dpo_loss(policy[0], policy[1], ref[0], ref[1], hp.dpo_beta)
        tokens = sum(
            min(len(p.chosen[0]), hp.max_length) + min(len(p.rejected[0]), hp.max_length) for p in batch
        )
        return loss, tokens

    return training.train(
        model,
        pairs,
        hp,
        pad_id=pad_id,
        checkpoint_dir=checkpoint_dir,
        report=report,
        on_checkpoint=on_checkpoint,
        device=device,
        objective=objective,
        dropout=False,
    )
