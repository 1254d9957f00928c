"""The search rank cursor counts per actor: the unique rank is per (session, query, actor).

Rows that met the old constraint (one rank per session and query, whoever asked) meet the new
ones, which are narrower, so no row needs changing."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("toolset", "0002_roles"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="toolcall",
            name="toolset_call_search_rank_unique",
        ),
        migrations.AddConstraint(
            model_name="toolcall",
            constraint=models.UniqueConstraint(
                condition=models.Q(("actor_user__isnull", False), ("tool", "search")),
                fields=("session", "tool", "query", "actor_user", "rank"),
                name="toolset_call_user_search_rank_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="toolcall",
            constraint=models.UniqueConstraint(
                condition=models.Q(
                    ("actor_user__isnull", True),
                    ("tool", "search"),
                    models.Q(("actor_model", ""), _negated=True),
                ),
                fields=("session", "tool", "query", "actor_model", "rank"),
                name="toolset_call_model_search_rank_unique",
            ),
        ),
    ]
