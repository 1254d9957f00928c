"""Create the role groups and grant them the dialogs app's permissions."""

from django.db import migrations

from dialogs.apps import DialogsConfig
from groundwork.roles import grant_permissions


def grant(apps, schema_editor):
    grant_permissions(apps, DialogsConfig.role_grants)


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
