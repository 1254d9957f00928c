"""Credit the model turns written before turns had a model version.

Until now the model version lived on the dialog, overwritten by the latest model that answered in
it. That name is the best information there is about who wrote a dialog's earlier model turns, so
each model turn gets it; a dialog that two versions answered in credits all its turns to the
later one (nothing recorded the earlier). User turns get none.
"""

from typing import Any

from django.db import migrations
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce


def fill_turn_model_versions(apps: Any, schema_editor: Any) -> None:
    """Each model turn without a model version gets its dialog's model version."""
    Dialog = apps.get_model("dialogs", "Dialog")
    Turn = apps.get_model("dialogs", "Turn")
    dialog_version = Dialog.objects.filter(pk=OuterRef("dialog_id")).values("model_version")[:1]
    Turn.objects.filter(speaker="model", model_version="").exclude(dialog__model_version="").update(
        model_version=Subquery(dialog_version)
    )


def restore_dialog_model_versions(apps: Any, schema_editor: Any) -> None:
    """Backwards: the dialog's model version is again the latest model that answered in it."""
    Dialog = apps.get_model("dialogs", "Dialog")
    Turn = apps.get_model("dialogs", "Turn")
    latest = (
        Turn.objects.filter(dialog_id=OuterRef("pk"), speaker="model")
        .exclude(model_version="")
        .order_by("-index")
        .values("model_version")[:1]
    )
    Dialog.objects.update(model_version=Coalesce(Subquery(latest), Value("")))


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0005_turn_model_version_and_fallback"),
    ]

    operations = [
        migrations.RunPython(fill_turn_model_versions, restore_dialog_model_versions),
    ]
