from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dialogs import demo
from dialogs.evaluation_sets import evaluation_set_from_dialogs


class Command(BaseCommand):
    help = (
        f"Make the demo evaluation set {demo.EVALUATION_SET!r}: about {demo.EVALUATION_CONTEXTS} contexts "
        "cut from a fixed sample of the demo dialogs, which every dataset build then holds out of "
        "training (idempotent: the same dialogs give the same set). Run it before the first model is "
        "trained (make run does), so that no model has seen them."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        dialogs = demo.evaluation_sample()
        if not dialogs:
            self.stdout.write("demo evaluation set: no demo dialogs (load_demo_dialogs first); none made")
            return
        result = evaluation_set_from_dialogs(
            name=demo.EVALUATION_SET,
            dialogs=dialogs,
            description="Contexts of demo dialogs held out of training (make run).",
        )
        made = "made" if result.created else "already present"
        self.stdout.write(
            f"demo evaluation set {result.evaluation_set}: {result.evaluation_set.context_count} contexts "
            f"from {len(dialogs)} held-out dialogs, {made}"
        )
