from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from trainer.services import model_imports


class Command(BaseCommand):
    help = (
        "Import a local folder holding a transformers causal language model and its tokenizer "
        "(save_pretrained, safetensors weights) as a model version of kind 'imported', to fine-tune "
        "and serve. The folder must lie under MODEL_IMPORT_ROOTS (default ARTIFACTS_DIR/imports); "
        "a relative path is taken from the first of them. Nothing is downloaded."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", help="The model's folder (config.json, model.safetensors, tokenizer).")
        parser.add_argument("--name", required=True, help="The new model version's name.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = model_imports.model_import(folder=options["folder"], name=options["name"])
        except model_imports.ModelImportError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"imported {version.name}: {version.parameters:,} parameters, "
                f"{version.config.get('model_type')}, in {version.path}"
            )
        )
