"""Generations of the document corpus, so that each host's search index can tell it is behind
and re-index only what changed. Existing documents keep generation 0: a host whose index has no
mark yet rebuilds it once from the database."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("toolset", "0003_per_actor_search_rank"),
    ]

    operations = [
        migrations.CreateModel(
            name="DocumentGeneration",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("epoch", models.CharField(max_length=32)),
                ("value", models.BigIntegerField(default=0)),
            ],
        ),
        migrations.CreateModel(
            name="DocumentRemoval",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("url", models.URLField(max_length=2000, unique=True)),
                ("generation", models.BigIntegerField(db_index=True)),
            ],
        ),
        migrations.AddField(
            model_name="document",
            name="generation",
            field=models.BigIntegerField(db_index=True, default=0),
        ),
    ]
