"""Every model turn names the model version that wrote it, and says when it is a canned reply."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0004_seed_roles"),
    ]

    operations = [
        migrations.AddField(
            model_name="turn",
            name="model_version",
            field=models.CharField(blank=True, db_index=True, max_length=100),
        ),
        migrations.AddField(
            model_name="turn",
            name="fallback",
            field=models.CharField(
                blank=True,
                choices=[("unsafe", "Every candidate predicted unsafe"), ("empty", "Every candidate empty")],
                db_index=True,
                max_length=8,
            ),
        ),
    ]
