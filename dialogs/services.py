"""Every write of the dialogs app: importing, exporting, export jobs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from dialogs.models import Dialog, DialogExport, Role, Turn
from dialogs.records import DialogRecord, Limits, TurnRecord, parse_object
from groundwork import queueing
from groundwork.jsonl import (
    ImportErrors,
    ImportRefused,
    RecordError,
    parse_each_line,
    parse_each_object,
    unique_records,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

BATCH_SIZE = 1000


class DialogImportError(ImportRefused):
    """A dialog import was refused; nothing was written."""


@dataclass
class ImportResult:
    created: int = 0
    unchanged: int = 0
    ids: list[str] = field(default_factory=list)


def import_limits() -> Limits:
    return Limits(
        max_turns=settings.DIALOG_MAX_TURNS,
        max_turn_chars=settings.TURN_MAX_CHARS,
        max_line_bytes=settings.DIALOG_IMPORT_MAX_LINE_BYTES,
    )


def parse_jsonl(lines: Iterable[str | bytes]) -> Iterator[DialogRecord | RecordError]:
    """Parse JSONL lines (blank lines skipped), yielding a record or the error of each line."""
    return parse_each_line(lines, parse_object, import_limits())


def parse_objects(objects: Iterable[Any]) -> Iterator[DialogRecord | RecordError]:
    """Check already-decoded dialog objects (an API body); "line" is the 1-based position."""
    return parse_each_object(objects, parse_object, import_limits())


def dialogs_import(
    *,
    records: Iterable[DialogRecord | RecordError],
    source: str,
    created_by: User | None = None,
) -> ImportResult:
    """Import parsed dialogs all or nothing.

    A dialog whose id exists with the same content is left as it is (re-importing a file adds
    nothing twice); the same id with other content is an error, since labels may already point
    at its turns. Raises ``DialogImportError`` with every problem found (up to
    ``MAX_REPORTED_ERRORS``) and writes nothing then.
    """
    errors = ImportErrors(DialogImportError)
    pending = unique_records(records, key=lambda record: record.id, field="id", errors=errors)

    roles = {
        r.slug: r for r in Role.objects.filter(slug__in={rec.role for rec in pending.values() if rec.role})
    }
    for record in pending.values():
        if record.role and record.role not in roles:
            errors.append(RecordError(record.line, "role", f"no role with slug {record.role!r}"))

    result = ImportResult()
    existing: set[str] = set()
    ids = list(pending)
    for start in range(0, len(ids), BATCH_SIZE):
        chunk = ids[start : start + BATCH_SIZE]
        stored = Dialog.objects.filter(external_id__in=chunk).select_related("role").prefetch_related("turns")
        for dialog in stored:
            record = pending[dialog.external_id]
            existing.add(dialog.external_id)
            if dialog_to_record(dialog) != record:
                errors.append(
                    RecordError(
                        record.line,
                        "id",
                        f"dialog {dialog.external_id!r} already exists with other content; "
                        "ids are immutable, give the changed dialog a new id",
                    )
                )
    errors.refuse_if_any()

    new = [record for record in pending.values() if record.id not in existing]
    source = source[: Dialog._meta.get_field("source").max_length]
    result.unchanged = len(existing)
    with transaction.atomic():
        for start in range(0, len(new), BATCH_SIZE):
            batch = new[start : start + BATCH_SIZE]
            dialogs = Dialog.objects.bulk_create(
                [
                    Dialog(
                        external_id=rec.id,
                        purpose=rec.purpose,
                        mode=rec.mode,
                        role=roles.get(rec.role) if rec.role else None,
                        meta=rec.meta,
                        source=source,
                        created_by=created_by,
                    )
                    for rec in batch
                ]
            )
            Turn.objects.bulk_create(
                [
                    Turn(
                        dialog=dialog,
                        index=index,
                        speaker=turn.speaker,
                        text=turn.text,
                        model_version=turn.model_version,
                        fallback=turn.fallback,
                    )
                    for dialog, rec in zip(dialogs, batch, strict=True)
                    for index, turn in enumerate(rec.turns)
                ]
            )
    result.created = len(new)
    result.ids = [rec.id for rec in new]
    logger.info("imported %d dialogs from %s (%d already present)", result.created, source, result.unchanged)
    return result


def dialogs_import_file(
    *, path: Path, source: str | None = None, created_by: User | None = None
) -> ImportResult:
    """Import a JSONL file (see ``dialogs.records``); all or nothing."""
    with path.open("rb") as stream:
        return dialogs_import(records=parse_jsonl(stream), source=source or path.name, created_by=created_by)


def dialog_to_record(dialog: Dialog) -> DialogRecord:
    """The JSONL record of a stored dialog (turns from a prefetch when there is one)."""
    return DialogRecord(
        id=dialog.external_id,
        purpose=dialog.purpose,
        mode=dialog.mode,
        role=dialog.role.slug if dialog.role_id else None,
        turns=tuple(
            TurnRecord(speaker=t.speaker, text=t.text, model_version=t.model_version, fallback=t.fallback)
            for t in dialog.turns.all()
        ),
        meta=dialog.meta,
    )


def dialogs_write_jsonl(*, dialogs: QuerySet[Dialog], stream: IO[str]) -> int:
    """Write ``dialogs`` as JSONL to ``stream``, streaming from the database; returns the count."""
    count = 0
    queryset = dialogs.select_related("role").prefetch_related("turns").order_by("id")
    for dialog in queryset.iterator(chunk_size=BATCH_SIZE):
        stream.write(json.dumps(dialog_to_record(dialog).to_json(), ensure_ascii=False) + "\n")
        count += 1
    return count


def dialogs_export_file(*, path: Path, purpose: str = "") -> int:
    """Write the dialogs (of one purpose, or all) to ``path`` as JSONL; returns the count.

    Written to a ``.partial`` file first and renamed, so a reader never sees half a file.
    """
    dialogs = Dialog.objects.all()
    if purpose:
        dialogs = dialogs.filter(purpose=purpose)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = path.with_name(path.name + ".partial")
    try:
        with partial_path.open("w", encoding="utf-8") as stream:
            count = dialogs_write_jsonl(dialogs=dialogs, stream=stream)
        os.replace(partial_path, path)
    finally:
        partial_path.unlink(missing_ok=True)
    return count


def dialog_export_request(*, requested_by: User | None, purpose: str = "") -> DialogExport:
    """Queue an export of the dialogs (of one purpose, or all) for a Celery worker."""
    export = DialogExport.objects.create(requested_by=requested_by, purpose=purpose)
    # If the broker cannot take it, the request leaves no export behind (a 503).
    undo = DialogExport.objects.filter(pk=export.pk).delete
    queueing.enqueue("dialogs.tasks.dialog_export_run_task", export.pk, undo=undo)
    return export


def dialog_export_failed(*, export_id: int, error: str) -> None:
    """Mark an export whose task raised as failed with the cause, unless it ended meanwhile."""
    DialogExport.objects.filter(pk=export_id).exclude(status=DialogExport.Status.DONE).update(
        status=DialogExport.Status.FAILED, error=error, finished_at=timezone.now()
    )


def dialog_export_run(*, export_id: int) -> DialogExport:
    """Write the export's file under ARTIFACTS_DIR; idempotent, a finished export is left alone."""
    with transaction.atomic():
        export = DialogExport.objects.select_for_update().get(pk=export_id)
        if export.status == DialogExport.Status.DONE:
            return export
        export.status = DialogExport.Status.RUNNING
        export.save(update_fields=["status"])

    path = settings.ARTIFACTS_DIR / "exports" / f"dialogs-{export.pk}.jsonl"
    # A failure: the task (``JobTask``) marks the export failed with the cause.
    count = dialogs_export_file(path=path, purpose=export.purpose)

    export.status = DialogExport.Status.DONE
    export.path = str(path)
    export.dialog_count = count
    export.sha256 = _sha256(path)
    export.error = ""
    export.finished_at = timezone.now()
    export.save(update_fields=["status", "path", "dialog_count", "sha256", "error", "finished_at"])
    return export


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


# --- turns of a live chat -------------------------------------------------------------------------


class TurnConflict(ValueError):
    """The dialog moved on since the turn was made (another answer got there first)."""


@dataclass(frozen=True)
class CandidateRecord:
    """One sampled response of a model turn, as sample-and-rank saw it."""

    text: str
    scores: dict[str, Any]
    chosen: bool = False


@transaction.atomic
def turn_add(
    *,
    dialog: Dialog,
    speaker: str,
    text: str,
    base_text: str = "",
    research: Iterable[dict[str, str]] = (),
    candidates: Iterable[CandidateRecord] = (),
    model_version: str = "",
    fallback: str = "",
    index: int | None = None,
) -> Turn:
    """Append a turn to ``dialog`` (the next index, under a row lock so two writers cannot take
    the same one), with the sampled candidates of a model turn. ``model_version`` names the model
    version that wrote the turn and is recorded on the turn (model turns only: each turn is
    credited to its own writer, whichever models answered before or after). ``fallback``
    (``Turn.Fallback``) marks a model turn whose text is a canned reply, not one of the
    candidates. ``index``, when given, is the index the turn was made for (an answer to the turns
    before it): ``TurnConflict`` if the dialog has moved on."""
    from dialogs.models import Candidate, Speaker

    if speaker not in Speaker.values:
        raise ValueError(f"speaker must be one of {', '.join(Speaker.values)}, not {speaker!r}")
    if speaker != Speaker.MODEL and (model_version or fallback):
        raise ValueError("only a model turn has a model version or a fallback")
    if fallback and fallback not in Turn.Fallback.values:
        raise ValueError(f"fallback must be one of {', '.join(Turn.Fallback.values)}, not {fallback!r}")
    if len(model_version) > Turn._meta.get_field("model_version").max_length:
        raise ValueError(
            f"a model version name has at most {Turn._meta.get_field('model_version').max_length} characters"
        )
    text = text.strip()
    if not text:
        raise ValueError("a turn needs text")
    if len(text) > settings.TURN_MAX_CHARS:
        raise ValueError(f"a turn has at most {settings.TURN_MAX_CHARS} characters")
    dialog = Dialog.objects.select_for_update().get(pk=dialog.pk)
    last = dialog.turns.order_by("-index").values_list("index", flat=True).first()
    next_index = 0 if last is None else last + 1
    if index is not None and index != next_index:
        raise TurnConflict(f"turn {index} of dialog {dialog.external_id} was already written")
    turn = Turn.objects.create(
        dialog=dialog,
        index=next_index,
        speaker=speaker,
        text=text,
        model_version=model_version,
        fallback=fallback,
        base_text=base_text,
        research=list(research),
    )
    Candidate.objects.bulk_create(
        Candidate(turn=turn, index=i, text=c.text, scores=c.scores, chosen=c.chosen)
        for i, c in enumerate(candidates)
    )
    return turn
