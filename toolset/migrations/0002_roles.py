"""Grant the role groups the toolset app's permissions."""

from django.db import migrations

from groundwork.roles import grant_permissions
from toolset.apps import ToolsetConfig


def grant(apps, schema_editor):
    grant_permissions(apps, ToolsetConfig.role_grants)


class Migration(migrations.Migration):
    dependencies = [
        ("toolset", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
