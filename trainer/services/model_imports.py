"""Importing the lab's own base model: a local folder holding a transformers causal language
model and its tokenizer becomes a ``ModelVersion`` of kind ``imported`` (``model_import``), which
datasets render with (its tokenizer) and fine-tunes start from (``trainer.causal_lm``).

Nothing is downloaded and no code from the folder runs: config and tokenizer are loaded with
``local_files_only`` and without ``trust_remote_code``, and the weights must be safetensors (a
``pytorch_model.bin`` is a pickle, which can run code when loaded).

Where a folder may be: only under one of ``settings.MODEL_IMPORT_ROOTS`` (default
``ARTIFACTS_DIR/imports``), after resolving symbolic links, and no file in it may lead outside
them. The import is reachable from the API and the admin, and a request that could name any path
on the server would read whatever the server can (keys, other users' files) into a model folder.
A relative path is taken relative to the first root.

What is written: the folder is copied to ``ARTIFACTS_DIR/models/.<name>.import-<random>``,
checked and completed there (Groundwork's special tokens added to the tokenizer, saved as
``tokenizer.json``; the weights are not touched, ``causal_lm.load`` resizes the embeddings when a
job or the server loads them), then renamed to ``ARTIFACTS_DIR/models/<name>`` in one step, and
only then recorded. On any error the copy is removed: nothing half-written stays, and the source
folder is never changed.

The import runs where it is asked (a web worker for the API and the admin): it copies files and
loads the config and the tokenizer (so transformers), never the weights; parameters are counted
from the safetensors headers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction

from trainer.models import ModelVersion
from trainer.services.requests import TrainerError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_MAX_CHARS = ModelVersion._meta.get_field("name").max_length
RESERVED_PREFIX = "gw-"  # the names training jobs give their versions (training_jobs._finish)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# What the tokenizer must encode the same before and after it is saved with the special tokens.
PROBE = " Hello, world! <user> How are you? 123 <eos> naïve café 🙂"


class ModelImportError(TrainerError):
    """A folder that cannot be imported; the message says what is wrong and where."""


def import_roots() -> list[Path]:
    """The folders models may be imported from (resolved): ``settings.MODEL_IMPORT_ROOTS``, or
    ``ARTIFACTS_DIR/imports`` when that is empty."""
    roots = settings.MODEL_IMPORT_ROOTS or [settings.ARTIFACTS_DIR / "imports"]
    return [Path(root).resolve() for root in roots]


def model_import(*, folder: str | Path, name: str, created_by: User | None = None) -> ModelVersion:
    """Import the transformers causal LM in ``folder`` as the imported model version ``name``
    (see the module's docstring); ``ModelImportError`` says why a folder or a name is refused."""
    name = _checked_name(name)
    source = _allowed_folder(folder)
    weights = _check_files(source)
    models = settings.ARTIFACTS_DIR / "models"
    directory = models / name
    if directory.exists():
        raise ModelImportError(f"{directory} already exists: choose another name", field="name")
    models.mkdir(parents=True, exist_ok=True)
    staging = models / f".{name}.import-{uuid.uuid4().hex[:12]}"
    try:
        shutil.copytree(source, staging, symlinks=False)
        record = _prepare(staging, source, weights)
        try:
            os.rename(staging, directory)  # one step; refused when the name was taken meanwhile
        except OSError as exc:
            raise ModelImportError(f"{directory} already exists: choose another name", field="name") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                name=name,
                kind=ModelVersion.Kind.IMPORTED,
                source=str(source),
                directory=str(directory.relative_to(settings.ARTIFACTS_DIR)),
                **record,
            )
    except IntegrityError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise ModelImportError(f"a model version named {name!r} exists already", field="name") from exc
    logger.info("model version %s imported from %s by %s", name, source, created_by or "a command")
    return version


def _checked_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME.fullmatch(name) or len(name) > NAME_MAX_CHARS:
        raise ModelImportError(
            f"a model version's name is 1 to {NAME_MAX_CHARS} letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; not {name!r}",
            field="name",
        )
    if name.startswith(RESERVED_PREFIX):
        raise ModelImportError(
            f"names starting with {RESERVED_PREFIX!r} are the trained versions'; choose another", field="name"
        )
    if ModelVersion.objects.filter(name=name).exists():
        raise ModelImportError(f"a model version named {name!r} exists already", field="name")
    return name


def _allowed_folder(folder: str | Path) -> Path:
    """The folder, resolved, when it lies under an import root (and so does all it links to)."""
    roots = import_roots()
    text = str(folder or "").strip()
    if not text or "\x00" in text:
        raise ModelImportError("name the folder to import", field="folder")
    path = Path(text)
    if not path.is_absolute():
        path = roots[0] / path
    allowed = ", ".join(str(root) for root in roots)
    try:
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            raise ModelImportError(
                f"{path} is outside the folders models may be imported from ({allowed}, the setting "
                "MODEL_IMPORT_ROOTS): copy the model into one of them",
                field="folder",
            )
        if not resolved.is_dir():
            raise ModelImportError(f"there is no folder {path}", field="folder")
        for entry in _walk(resolved):
            if not any(entry.resolve().is_relative_to(root) for root in roots):
                raise ModelImportError(
                    f"{entry} leads outside the folders models may be imported from ({allowed})",
                    field="folder",
                )
    except OSError as exc:  # a name too long, a folder it may not read
        raise ModelImportError(f"{path} cannot be read: {exc.strerror or exc}", field="folder") from None
    return resolved


def _walk(folder: Path) -> Iterable[Path]:
    for directory, subfolders, files in os.walk(folder):
        for entry in (*subfolders, *files):
            yield Path(directory) / entry


def _check_files(source: Path) -> list[str]:
    """The weight files (safetensors, relative to the folder) of a folder that has a config,
    weights and a tokenizer."""
    if not (source / "config.json").is_file():
        raise ModelImportError(
            f"{source} has no config.json: it is not a folder a transformers model was saved to "
            "(save_pretrained)",
            field="folder",
        )
    weights = _weight_files(source)
    if not any((source / file).is_file() for file in TOKENIZER_FILES):
        raise ModelImportError(
            f"{source} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): save the tokenizer "
            "beside the model (tokenizer.save_pretrained)",
            field="folder",
        )
    return weights


def _weight_files(source: Path) -> list[str]:
    index = source / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as exc:
            raise ModelImportError(f"{index} is not a safetensors index: {exc}", field="folder") from None
        missing = [shard for shard in shards if not (source / shard).is_file()]
        if missing:
            raise ModelImportError(
                f"{index} names shards {source} lacks: {', '.join(missing)}", field="folder"
            )
        return shards
    if (source / "model.safetensors").is_file():
        return ["model.safetensors"]
    if any(source.glob("pytorch_model*.bin")):
        raise ModelImportError(
            f"{source} holds its weights as pytorch_model.bin, a pickle that can run code when loaded: "
            "save them as safetensors (model.save_pretrained does by default) and import that",
            field="folder",
        )
    raise ModelImportError(f"{source} has no weights (model.safetensors)", field="folder")


def _prepare(staging: Path, source: Path, weights: list[str]) -> dict[str, Any]:
    """Check the copy's config and tokenizer, add Groundwork's special tokens to the tokenizer
    (saved in the copy), and return the version's ``config``, ``parameters`` and
    ``tokenizer_sha256``. Errors name the source folder and its file."""
    from transformers import AutoConfig, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from trainer import causal_lm
    from trainer import tokenizer as tokenizers
    from trainer.services.dataset_builds import tokenizer_sha256

    try:
        config = AutoConfig.from_pretrained(str(staging), local_files_only=True, trust_remote_code=False)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise ModelImportError(
            f"{source / 'config.json'} cannot be read as a transformers config without running code "
            f"from the folder: {exc}",
            field="folder",
        ) from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelImportError(
            f"{source / 'config.json'} describes a {config.model_type!r} model, which "
            "AutoModelForCausalLM does not load: import a causal (decoder-only) language model",
            field="folder",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(staging), local_files_only=True, trust_remote_code=False
        )
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
        raise ModelImportError(f"the tokenizer in {source} cannot be loaded: {exc}", field="folder") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ModelImportError(
            f"the tokenizer in {source} is not a fast (tokenizers) one: save it with tokenizer.json",
            field="folder",
        )
    try:
        added = causal_lm.add_groundwork_tokens(tokenizer)
    except ValueError as exc:
        raise ModelImportError(f"the tokenizer in {source} cannot take Groundwork's tokens: {exc}") from None
    tokenizer.save_pretrained(str(staging))
    # Saved as every dataset and version saves it (load, then save): one tokenizer.json, one sha256.
    saved = tokenizers.load(staging)
    tokenizers.save(saved, staging)
    if saved.encode(PROBE, add_special_tokens=False) != tokenizer.encode(PROBE, add_special_tokens=False):
        raise ModelImportError(
            f"the tokenizer in {source} encodes differently once saved as tokenizer.json: "
            "it needs code or files Groundwork does not load",
            field="folder",
        )
    record = causal_lm.config_record(config)
    record.update(tokenizer_size=len(saved), added_tokens=added)
    return {
        "config": record,
        "parameters": _parameters(staging, weights, source),
        "tokenizer_sha256": tokenizer_sha256(staging),
    }


def _parameters(folder: Path, weights: list[str], source: Path) -> int:
    """How many numbers the safetensors files hold, from their headers (the weights unread)."""
    total = 0
    for file in weights:
        try:
            with (folder / file).open("rb") as handle:
                (size,) = struct.unpack("<Q", handle.read(8))
                if size > 100_000_000:
                    raise ValueError(f"a header of {size} bytes")
                header = json.loads(handle.read(size))
            for key, tensor in header.items():
                if key != "__metadata__":
                    count = 1
                    for dimension in tensor["shape"]:
                        count *= int(dimension)
                    total += count
        except (ValueError, KeyError, TypeError, struct.error) as exc:
            raise ModelImportError(
                f"{source / file} is not a safetensors file: {exc}", field="folder"
            ) from None
    return total
