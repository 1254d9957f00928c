"""Dataset files: one schema, written as JSONL and Parquet side by side, streamed.

A dataset version is a folder::

    manifest.json          counts, label balance, versions, sha256 of every other file
    train.jsonl            one example per line
    validation.jsonl
    train.parquet          the same rows, the same columns
    validation.parquet
    tokenizer/             the tokenizer that rendered ``input_ids`` (save_pretrained)

Both formats load with ``datasets.load_dataset("json" | "parquet", data_files={...})``. Rows are
written as they come (row groups of ``ROW_GROUP`` rows), so memory does not grow with the
dataset. Nothing here reads the clock or a random source: the same rows in the same order give
byte-identical files, hence the same sha256.

Columns (``SCHEMA``):

- ``id``: unique in the dataset, e.g. ``item-17-SENSIBLE``; ``split``: ``train`` | ``validation``
- ``kind``: ``generative`` | ``discriminative`` | ``research_query`` | ``research_step`` |
  ``document`` (a passage of a document of the search corpus: ``response`` holds it)
- ``attribute`` and ``label`` (discriminative only): ``SENSIBLE``… and 0/1; ``soft_label``: the
  raters' yes-fraction behind the label (null when not from ratings)
- ``dialog``: the dialog the example comes from (the split is decided by it); a document's is
  ``document:URL`` (always in the train split)
- ``context`` ``[{speaker, text}]``, ``response`` (the rated or base response), ``research``
  ``[{query, title, url, snippet}]`` (earlier steps and the tool result each got),
  ``outcome_speaker`` ``TS`` | ``User`` and ``outcome`` (research kinds): the inputs the example
  was rendered from
- ``text``: the rendered example decoded, for reading; ``input_ids`` and ``loss_mask``: what
  training uses (``trainer.formats``)

A ``preference`` dataset writes two file sets of other schemas into its folder with the same
writer (``schema``, ``prefix``): its pairs as ``train``/``validation`` and its unpaired rows as
``kto_train``/``kto_validation`` (``trainer.services.preference_builds``).

This module does not import Django.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "validation")
ROW_GROUP = 2048

_TURN = pa.struct([("speaker", pa.string()), ("text", pa.string())])
_STEP = pa.struct(
    [("query", pa.string()), ("title", pa.string()), ("url", pa.string()), ("snippet", pa.string())]
)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("split", pa.string()),
        ("kind", pa.string()),
        ("attribute", pa.string()),
        ("label", pa.int8()),
        ("soft_label", pa.float32()),
        ("dialog", pa.string()),
        ("context", pa.list_(_TURN)),
        ("response", pa.string()),
        ("research", pa.list_(_STEP)),
        ("outcome_speaker", pa.string()),
        ("outcome", pa.string()),
        ("text", pa.string()),
        ("input_ids", pa.list_(pa.int32())),
        ("loss_mask", pa.list_(pa.int8())),
    ]
)
COLUMNS = tuple(SCHEMA.names)


def split_of(dialog: str, validation_percent: int) -> str:
    """``validation`` for about ``validation_percent`` % of dialogs, the same every time."""
    bucket = int.from_bytes(hashlib.sha256(dialog.encode()).digest()[:8], "big") % 100
    return "validation" if bucket < validation_percent else "train"


def sha256_of(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class DatasetWriter:
    """Writes rows to ``<split>.jsonl`` and ``<split>.parquet`` in ``directory`` as they come.

    Use as a context manager; ``files()`` after it closed gives ``{name: {"sha256", "bytes",
    "rows"}}``. A row missing a column or with an unknown one is a ValueError naming it.
    """

    def __init__(self, directory: str | Path, *, schema: pa.Schema = SCHEMA, prefix: str = "") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.columns = tuple(schema.names)
        self.prefix = prefix  # files are ``<prefix><split>.jsonl`` (another schema, same folder)
        self.rows = dict.fromkeys(SPLITS, 0)
        self._jsonl = {
            split: (self.directory / f"{prefix}{split}.jsonl").open("w", encoding="utf-8") for split in SPLITS
        }
        self._parquet = {
            split: pq.ParquetWriter(
                self.directory / f"{prefix}{split}.parquet",
                schema,
                compression="zstd",
                write_statistics=False,
            )
            for split in SPLITS
        }
        self._pending: dict[str, list[Mapping[str, Any]]] = {split: [] for split in SPLITS}
        self._closed = False

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: Mapping[str, Any]) -> None:
        if row.keys() != set(self.columns):
            missing = sorted(set(self.columns) - row.keys())
            extra = sorted(row.keys() - set(self.columns))
            raise ValueError(
                f"dataset row {row.get('id')!r}: missing columns {missing}, unknown columns {extra}"
            )
        split = row["split"]
        if split not in SPLITS:
            raise ValueError(f"dataset row {row['id']!r}: split must be one of {SPLITS}, not {split!r}")
        self._jsonl[split].write(
            json.dumps({name: row[name] for name in self.columns}, ensure_ascii=False) + "\n"
        )
        pending = self._pending[split]
        pending.append(row)
        self.rows[split] += 1
        if len(pending) >= ROW_GROUP:
            self._flush(split)

    def _flush(self, split: str) -> None:
        pending = self._pending[split]
        if pending:
            self._parquet[split].write_table(pa.Table.from_pylist(pending, schema=self.schema))
            pending.clear()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for split in SPLITS:
            self._flush(split)
            self._parquet[split].close()
            self._jsonl[split].close()

    def files(self) -> dict[str, dict[str, Any]]:
        if not self._closed:
            raise RuntimeError("close the writer first")
        out: dict[str, dict[str, Any]] = {}
        for split in SPLITS:
            for suffix in ("jsonl", "parquet"):
                path = self.directory / f"{self.prefix}{split}.{suffix}"
                out[path.name] = {
                    "sha256": sha256_of(path),
                    "bytes": path.stat().st_size,
                    "rows": self.rows[split],
                }
        return out


def data_files(directory: str | Path, fmt: str, prefix: str = "") -> dict[str, str]:
    """``{split: path}`` for ``datasets.load_dataset(fmt, data_files=...)``; fmt ``json`` or ``parquet``."""
    suffix = {"json": "jsonl", "parquet": "parquet"}[fmt]
    return {split: str(Path(directory) / f"{prefix}{split}.{suffix}") for split in SPLITS}


def read_rows(
    directory: str | Path, split: str, columns: tuple[str, ...] | None = COLUMNS, prefix: str = ""
) -> Iterator[dict[str, Any]]:
    """The rows of one split, streamed from its Parquet file a row group at a time (``columns``
    None: all of them)."""
    parquet = pq.ParquetFile(Path(directory) / f"{prefix}{split}.parquet")
    chosen = list(columns) if columns is not None else None
    for batch in parquet.iter_batches(batch_size=ROW_GROUP, columns=chosen):
        yield from batch.to_pylist()
