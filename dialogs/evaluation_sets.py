"""Every write of evaluation sets: importing one (JSONL, all or nothing), making one from dialogs,
locking one when it is first used, deleting one that never was.

A set is immutable once locked, so that every model version evaluated on it is judged on the same
contexts: a changed set is imported under the same name and becomes its next version. Importing
contents identical to the name's latest version makes no new version: the import answers that
version, unchanged (as re-importing a dialog changes nothing), so that a script may import its
file every time it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.utils import timezone

from dialogs.evaluation_records import (
    EVALUATION_PURPOSES,
    EvaluationContextRecord,
    check_description,
    check_set_name,
    content_sha256,
    parse_object,
)
from dialogs.models import Dialog, EvaluationContext, EvaluationSet, Purpose, Role, Speaker, Turn
from dialogs.services import import_limits
from groundwork.errors import DomainError
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


class EvaluationSetError(DomainError):
    """A change to an evaluation set was refused."""


class EvaluationSetLocked(EvaluationSetError):
    """The set has been used to evaluate a model: it no longer changes (import a new version)."""

    status = 409


class EvaluationSetImportError(ImportRefused):
    """An evaluation set import was refused; nothing was written."""


@dataclass(frozen=True)
class EvaluationSetImport:
    """What an import did: the set it made, or (``created`` false) the name's latest version,
    whose contexts were the same."""

    evaluation_set: EvaluationSet
    created: bool


def parse_jsonl(lines: Iterable[str | bytes]) -> Iterator[EvaluationContextRecord | RecordError]:
    """Parse JSONL lines (blank lines skipped), yielding a record or the error of each line."""
    return parse_each_line(lines, parse_object, import_limits())


def parse_objects(objects: Iterable[Any]) -> Iterator[EvaluationContextRecord | RecordError]:
    """Check already-decoded context objects (an API body); "line" is the 1-based position."""
    return parse_each_object(objects, parse_object, import_limits())


def evaluation_set_import(
    *,
    name: str,
    records: Iterable[EvaluationContextRecord | RecordError],
    description: str = "",
    source: str = "",
    created_by: User | None = None,
) -> EvaluationSetImport:
    """Import the contexts of a set called ``name``, all or nothing: its first version, the next
    one, or (identical contexts) none. Raises ``EvaluationSetImportError`` with every bad line
    (line, field: a duplicate id, a role no one has, ...) and writes nothing then;
    ``EvaluationSetError`` for a name a set cannot have."""
    return _evaluation_set_save(
        name=name,
        records=records,
        sources={},
        description=description,
        source=source,
        created_by=created_by,
    )


def evaluation_set_import_file(
    *,
    path: Path,
    name: str | None = None,
    description: str = "",
    source: str | None = None,
    created_by: User | None = None,
) -> EvaluationSetImport:
    """Import a JSONL file (see ``dialogs.evaluation_records``) as the set ``name`` (default: the
    file's name without its suffix); all or nothing."""
    with path.open("rb") as stream:
        return evaluation_set_import(
            name=name or path.stem,
            records=parse_jsonl(stream),
            description=description,
            source=source or path.name,
            created_by=created_by,
        )


def evaluation_set_from_dialogs(
    *,
    name: str,
    dialogs: Iterable[Dialog],
    description: str = "",
    purpose: str | None = None,
    created_by: User | None = None,
) -> EvaluationSetImport:
    """A set made of existing dialogs' contexts, recording the dialog each came from (so that a
    dataset build can hold those dialogs out of training).

    Every model turn with a user turn before it gives a context: the turns before it, with the
    model turn's text as the reference, the id ``<dialog id>#<turn index>``, and the dialog's
    purpose and role (``purpose``, when given, for every context; a pre-training dialog's
    contexts test quality). Versions as ``evaluation_set_import``; a context the import format
    refuses (a role dialog without a role) refuses the set, naming the dialog and the turn.
    """
    if purpose is not None and purpose not in EVALUATION_PURPOSES:
        raise EvaluationSetError(f"purpose: {purpose!r} is not one of {', '.join(EVALUATION_PURPOSES)}")
    objects: list[dict[str, Any]] = []
    dialog_ids: list[int] = []
    stored = Dialog.objects.filter(pk__in=[d.pk for d in dialogs]).select_related("role")
    turns = Prefetch("turns", queryset=Turn.objects.order_by("index"))
    for dialog in stored.prefetch_related(turns).order_by("pk"):
        before: list[dict[str, str]] = []
        user_spoke = False
        for turn in dialog.turns.all():
            if turn.speaker == Speaker.MODEL and user_spoke:
                context_purpose = purpose or dialog.purpose
                if context_purpose == Purpose.PRETRAIN:
                    context_purpose = Purpose.QUALITY
                objects.append(
                    {
                        "id": f"{dialog.external_id}#{turn.index}",
                        "context": list(before),
                        "purpose": context_purpose,
                        "role": dialog.role.slug if dialog.role_id else None,
                        "reference": turn.text,
                    }
                )
                dialog_ids.append(dialog.pk)
            before.append({"speaker": turn.speaker, "text": turn.text})
            user_spoke = user_spoke or turn.speaker == Speaker.USER
    if not objects:
        raise EvaluationSetError("These dialogs have no model turn after a user turn: nothing to evaluate.")
    records = list(parse_objects(objects))
    sources = {
        record.id: dialog_id
        for record, dialog_id in zip(records, dialog_ids, strict=True)
        if isinstance(record, EvaluationContextRecord)
    }
    # An error names the context (dialog#turn), not its position in a list no one wrote.
    records = [
        RecordError(r.line, f"{objects[r.line - 1]['id']}: {r.field}", r.message)
        if isinstance(r, RecordError)
        else r
        for r in records
    ]
    return _evaluation_set_save(
        name=name,
        records=records,
        sources=sources,
        description=description,
        source="dialogs",
        created_by=created_by,
    )


def _evaluation_set_save(
    *,
    name: str,
    records: Iterable[EvaluationContextRecord | RecordError],
    sources: dict[str, int],
    description: str,
    source: str,
    created_by: User | None,
) -> EvaluationSetImport:
    """Check the records and save them as the next version of ``name`` (see the callers)."""
    try:
        name = check_set_name(name)
    except ValueError as exc:
        raise EvaluationSetError(f"name: {exc}") from None
    try:
        description = check_description(description)
    except ValueError as exc:
        raise EvaluationSetError(f"description: {exc}") from None
    errors = ImportErrors(EvaluationSetImportError)
    pending = unique_records(records, key=lambda record: record.id, field="id", errors=errors)
    slugs = {record.role for record in pending.values() if record.role}
    roles = {role.slug: role for role in Role.objects.filter(slug__in=slugs)}
    for record in pending.values():
        if record.role and record.role not in roles:
            errors.add(RecordError(record.line, "role", f"no role with slug {record.role!r}"))
    errors.refuse_if_any()
    if not pending:
        raise EvaluationSetImportError([RecordError(0, "(file)", "no contexts: a set needs at least one")])

    digest = content_sha256(pending.values())
    source = source[: EvaluationSet._meta.get_field("source").max_length]
    try:
        with transaction.atomic():
            latest = EvaluationSet.objects.select_for_update().filter(name=name).order_by("-version").first()
            if latest is not None and latest.sha256 == digest:
                return EvaluationSetImport(evaluation_set=latest, created=False)
            evaluation_set = EvaluationSet.objects.create(
                name=name,
                version=latest.version + 1 if latest else 1,
                description=description,
                source=source,
                sha256=digest,
                context_count=len(pending),
                created_by=created_by,
            )
            EvaluationContext.objects.bulk_create(
                (
                    EvaluationContext(
                        evaluation_set=evaluation_set,
                        index=index,
                        external_id=record.id,
                        purpose=record.purpose,
                        role=roles.get(record.role) if record.role else None,
                        turns=[{"speaker": t.speaker, "text": t.text} for t in record.context],
                        reference=record.reference,
                        source_dialog_id=sources.get(record.id),
                    )
                    for index, record in enumerate(pending.values())
                ),
                batch_size=BATCH_SIZE,
            )
    except IntegrityError:
        # Another import of this name took the same version number first.
        raise EvaluationSetError(
            f"Another import of the set {name!r} was saved at the same moment; import again.", status=409
        ) from None
    logger.info("evaluation set %s: %d contexts from %s", evaluation_set, len(pending), source)
    return EvaluationSetImport(evaluation_set=evaluation_set, created=True)


def evaluation_set_lock(*, evaluation_set: EvaluationSet) -> EvaluationSet:
    """Lock the set: from now on it refuses any change. Called when a model version is first
    evaluated on it; locking a locked set changes nothing (it keeps its first ``locked_at``)."""
    with transaction.atomic():
        locked = EvaluationSet.objects.select_for_update().get(pk=evaluation_set.pk)
        if locked.locked_at is None:
            locked.locked_at = timezone.now()
            locked.save(update_fields=["locked_at"])
    return locked


def evaluation_set_delete(*, evaluation_set: EvaluationSet) -> None:
    """Delete a set no model was evaluated on (a wrong import); ``EvaluationSetLocked`` (409) for
    a locked one."""
    with transaction.atomic():
        current = EvaluationSet.objects.select_for_update().get(pk=evaluation_set.pk)
        _refuse_if_locked(current)
        current.delete()


def _refuse_if_locked(evaluation_set: EvaluationSet) -> None:
    if evaluation_set.locked_at is not None:
        raise EvaluationSetLocked(
            f"The evaluation set {evaluation_set} is locked: model versions were evaluated on it "
            f"(since {evaluation_set.locked_at:%Y-%m-%d %H:%M} UTC), so it no longer changes. "
            "Import the changed contexts under the same name to make its next version."
        )
