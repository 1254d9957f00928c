"""The dialog's model version goes: each turn names its own (0006 copied it there)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0006_fill_turn_model_versions"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="dialog",
            name="model_version",
        ),
        migrations.AddConstraint(
            model_name="turn",
            constraint=models.CheckConstraint(
                condition=models.Q(("model_version", ""), ("speaker", "model"), _connector="OR"),
                name="turn_model_version_of_model",
            ),
        ),
        migrations.AddConstraint(
            model_name="turn",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("fallback", ""),
                    models.Q(("fallback__in", ["unsafe", "empty"]), ("speaker", "model")),
                    _connector="OR",
                ),
                name="turn_fallback_valid",
            ),
        ),
    ]
