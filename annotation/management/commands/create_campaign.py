from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from annotation.errors import AnnotationError
from annotation.services import campaigns
from dialogs.models import Dialog, Role


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from None


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class Command(BaseCommand):
    help = (
        "Create a rating campaign whose items are the model turns of the dialogs matching the filters "
        "(--purpose, --role, --model-version, --from, --to; fallback replies only with --include-fallback), "
        "or no items with --empty."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, help="ssi, safety, groundedness_eval, ...")
        parser.add_argument("--name", required=True)
        parser.add_argument("--purpose", help=f"Dialog purpose ({', '.join(Dialog.Purpose.values)}).")
        parser.add_argument("--role", help="Slug of the dialogs' role.")
        parser.add_argument("--model-version", help="Only the model turns this model version wrote.")
        parser.add_argument(
            "--include-fallback",
            action="store_true",
            help="Also rate fallback replies (sent when every candidate was predicted unsafe).",
        )
        parser.add_argument("--from", dest="first_day", help="Dialogs created on or after this date.")
        parser.add_argument("--to", dest="last_day", help="Dialogs created on or before this date.")
        parser.add_argument(
            "--raters", type=int, help="Raters per item (default: 5 for SSI, 3 for the other kinds)."
        )
        parser.add_argument(
            "--objectives", help="Safety objectives, comma-separated slugs (default: every active one)."
        )
        parser.add_argument("--instructions", default="")
        parser.add_argument("--empty", action="store_true", help="No items (to import judgments into).")
        parser.add_argument(
            "--stop-when-decided",
            action="store_true",
            help="Stop asking once an item's answer is decided (no remaining rater can change its labels); "
            "off by default: the paper asks every rater.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        purpose = options["purpose"]
        if purpose and purpose not in Dialog.Purpose.values:
            raise CommandError(f"Unknown purpose {purpose!r} (one of {', '.join(Dialog.Purpose.values)}).")
        role = options["role"]
        if role and not Role.objects.filter(slug=role).exists():
            raise CommandError(f"There is no role with slug {role!r}.")
        first = _day(options["first_day"]) if options["first_day"] else None
        last = _day(options["last_day"]) if options["last_day"] else None
        if first and last and first > last:
            raise CommandError("--from is after --to.")
        if options["raters"] is not None and options["raters"] < 1:
            # Checked here too: the service reads 0 as "the default".
            raise CommandError("--raters must be at least 1.")
        objectives = [slug.strip() for slug in (options["objectives"] or "").split(",") if slug.strip()]
        filters = campaigns.DialogFilters(
            purpose=purpose or None,
            role=role or None,
            model_version=options["model_version"] or None,
            created_from=_start_of(first) if first else None,
            created_to=_start_of(last + timedelta(days=1)) if last else None,
            include_fallback=options["include_fallback"],
        )
        try:
            campaign = campaigns.campaign_create(
                name=options["name"],
                kind=options["kind"],
                filters=filters,
                raters_per_item=options["raters"],
                objectives=objectives or None,
                instructions=options["instructions"],
                empty=options["empty"],
                stop_when_decided=options["stop_when_decided"],
            )
        except AnnotationError as exc:
            raise CommandError(str(exc)) from None
        items = campaign.items.count()
        self.stdout.write(
            self.style.SUCCESS(
                f"campaign {campaign.name!r} ({campaign.kind}, {campaign.raters_per_item} raters per item): "
                f"{items} items"
            )
        )
