"""Writing a ``preference`` dataset (``dataset_builds.dataset_build`` calls ``preference_write``):
the units of ``trainer.preference_sources`` streamed into two file sets in the dataset's folder,
each as JSONL and Parquet (``trainer.records.DatasetWriter``), in the forms TRL reads:

- pairs, ``train.jsonl`` / ``validation.jsonl`` (and ``.parquet``): ``prompt`` (the context turns
  as conversational messages, ``[{"role": "user" | "assistant", "content"}]``), ``chosen`` and
  ``rejected`` (each one assistant message): DPO, reward models;
- unpaired, ``kto_train.jsonl`` / ``kto_validation.jsonl`` (and ``.parquet``): ``prompt``,
  ``completion`` (one assistant message) and ``label`` (true: desirable): KTO.

Both carry ``id``, ``split``, ``source`` (``preference_sources.PAIR_SOURCES``), ``dialog`` (what
the split is decided by) and ``reason`` (why, in words). The manifest counts pairs and rows by
source and split (``counts``: ``pairs/<source>``, ``kto/<source>``), gives the rules, and says
which aggregation made each source's labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from annotation.models import Campaign
from trainer import preference_sources, records, sources
from trainer.models import DatasetVersion
from trainer.services.requests import TrainerError

UNPAIRED_PREFIX = "kto_"

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
_COMMON = [("id", pa.string()), ("split", pa.string()), ("source", pa.string()), ("dialog", pa.string())]
PAIR_SCHEMA = pa.schema(
    [
        *_COMMON,
        ("prompt", pa.list_(_MESSAGE)),
        ("chosen", pa.list_(_MESSAGE)),
        ("rejected", pa.list_(_MESSAGE)),
        ("reason", pa.string()),
    ]
)
UNPAIRED_SCHEMA = pa.schema(
    [
        *_COMMON,
        ("prompt", pa.list_(_MESSAGE)),
        ("completion", pa.list_(_MESSAGE)),
        ("label", pa.bool_()),
        ("reason", pa.string()),
    ]
)

# Which aggregation made the labels of each source (the manifest's ``label_sources``).
LABEL_SOURCES = {
    "rewrite": "the rater's own rewrite; items whose consensus labels (majority) say they need no "
    "research are left out",
    "candidates": "per candidate, the majority of the raters who labelled it (ties give none)",
    "ratings": "consensus labels (ConsensusLabel, majority by the paper's rules) of the SSI and "
    "safety campaigns, merged per response (unsafe when any chosen safety campaign says so)",
    "pairwise": "consensus of the side-by-side raters (majority; no majority is a tie, which gives no pair)",
}


def _pair_row(pair: preference_sources.Pair, split: str, dialog: str) -> dict[str, Any]:
    return {
        "id": pair.key,
        "split": split,
        "source": pair.source,
        "dialog": dialog,
        "prompt": pair.prompt,
        "chosen": preference_sources.answer(pair.chosen),
        "rejected": preference_sources.answer(pair.rejected),
        "reason": pair.reason,
    }


def _unpaired_row(row: preference_sources.Unpaired, split: str, dialog: str) -> dict[str, Any]:
    return {
        "id": row.key,
        "split": split,
        "source": row.source,
        "dialog": dialog,
        "prompt": row.prompt,
        "completion": preference_sources.answer(row.completion),
        "label": row.label,
        "reason": row.reason,
    }


def preference_write(
    dataset: DatasetVersion,
    directory: Path,
    campaigns: Sequence[Campaign],
    progress: Callable[[int, bool], None],
) -> dict[str, Any]:
    """Stream the dataset's pairs and unpaired rows into ``directory``; the manifest's parts
    that are particular to preferences (``counts``, ``label_balance``, ``skipped``, ``files``,
    ``pairs_by_source``, ``unpaired_by_source``, ``preference_rules``, ``label_sources``).
    ``progress(done, force)`` is called after every unit. ``TrainerError`` when nothing comes out."""
    total, units, held_out = preference_sources.preference_units(campaigns)
    DatasetVersion.objects.filter(pk=dataset.pk).update(total=total)
    counts: dict[str, dict[str, int]] = {split: {} for split in records.SPLITS}
    pairs_by_source = dict.fromkeys(preference_sources.PAIR_SOURCES, 0)
    unpaired_by_source = dict.fromkeys(preference_sources.UNPAIRED_SOURCES, 0)
    balance = {"KTO": {"0": 0, "1": 0}}
    skipped = {"sources_without_examples": 0, sources.HELD_OUT: held_out}
    done = 0
    with (
        records.DatasetWriter(directory, schema=PAIR_SCHEMA) as pairs,
        records.DatasetWriter(directory, schema=UNPAIRED_SCHEMA, prefix=UNPAIRED_PREFIX) as unpaired,
    ):
        for unit in units:
            split = unit.split or records.split_of(unit.dialog, dataset.validation_percent)
            if not (unit.pairs or unit.unpaired):
                skipped["sources_without_examples"] += 1
            for reason, count in unit.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + count
            for pair in unit.pairs:
                pairs.add(_pair_row(pair, split, unit.dialog))
                name = f"pairs/{pair.source}"
                counts[split][name] = counts[split].get(name, 0) + 1
                pairs_by_source[pair.source] += 1
            for row in unit.unpaired:
                unpaired.add(_unpaired_row(row, split, unit.dialog))
                name = f"kto/{row.source}"
                counts[split][name] = counts[split].get(name, 0) + 1
                unpaired_by_source[row.source] += 1
                balance["KTO"][str(int(row.label))] += 1
            done += 1
            progress(done, False)
    progress(done, True)
    if not any(counts[split] for split in records.SPLITS):
        raise TrainerError(
            "the chosen campaigns give no preference pairs or labelled responses yet (no consensus "
            "labels, no rewrites, no labelled candidates or no side-by-side choices)"
        )
    return {
        "format": {
            "pairs": {
                "files": {split: f"{split}.jsonl" for split in records.SPLITS},
                "columns": PAIR_SCHEMA.names,
                "trl": "prompt/chosen/rejected, conversational (DPOTrainer, RewardTrainer)",
            },
            "unpaired": {
                "files": {split: f"{UNPAIRED_PREFIX}{split}.jsonl" for split in records.SPLITS},
                "columns": UNPAIRED_SCHEMA.names,
                "trl": "prompt/completion/label, conversational (KTOTrainer)",
            },
        },
        "counts": counts,
        "pairs_by_source": pairs_by_source,
        "unpaired_by_source": unpaired_by_source,
        "label_balance": balance,
        "skipped": skipped,
        "preference_rules": preference_sources.__doc__,
        "label_sources": LABEL_SOURCES,
        "pairwise_split": "validation (answers to evaluation-set contexts: never trained on)",
        "files": {**pairs.files(), **unpaired.files()},
    }
