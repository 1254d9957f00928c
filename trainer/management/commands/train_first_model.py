from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dialogs.models import Purpose
from trainer.services import requests, training_jobs


class Command(BaseCommand):
    help = (
        "Train a tokenizer and a pre-trained model on the imported dialogs and documents, in this "
        "process, and make it serve. Does nothing when a model version exists, unless --force (then "
        "a new version is trained beside the old ones)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--steps", type=int, help="Optimizer steps (default: FIRST_MODEL_STEPS).")
        parser.add_argument(
            "--purpose",
            action="append",
            choices=Purpose.values,
            default=[],
            help="Train only on dialogs of this purpose (repeatable; default: all dialogs).",
        )
        parser.add_argument(
            "--vocab-size",
            type=int,
            help=f"BPE vocabulary size (default {training_jobs.FIRST_MODEL_VOCAB_SIZE}).",
        )
        parser.add_argument(
            "--documents",
            type=int,
            help="Documents of the search corpus to pre-train on beside the dialogs "
            "(default: FIRST_MODEL_DOCUMENTS; 0: none).",
        )
        for name in requests.MODEL_SIZE_FIELDS:
            parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"Model size {name}.")
        parser.add_argument("--force", action="store_true", help="Train even when a model version exists.")

    def handle(self, *args: Any, **options: Any) -> None:
        sizes = {name: options[name] for name in requests.MODEL_SIZE_FIELDS if options[name] is not None}
        try:
            version = training_jobs.first_model_ensure(
                steps=options["steps"],
                purposes=options["purpose"],
                model=sizes or None,
                vocab_size=options["vocab_size"],
                documents=options["documents"],
                force=options["force"],
                say=lambda line: self.stdout.write(line),
            )
        except requests.TrainerError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"serving model: {version.name}"))
