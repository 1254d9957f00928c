"""Create the role groups and grant them the dialogs app's permissions."""

from django.db import migrations

from groundwork.roles import Role, grant_permissions

MODELS = ("dialog", "turn", "role", "dialogexport")

GRANTS = {
    Role.ADMIN: [
        f"dialogs.{action}_{model}" for model in MODELS for action in ("add", "change", "delete", "view")
    ]
    # Admins unlock accounts locked after failed logins.
    + ["axes.view_accessattempt", "axes.delete_accessattempt"],
    Role.RESEARCHER: ["dialogs.view_dialog", "dialogs.view_turn", "dialogs.view_role"]
    + ["dialogs.add_dialogexport", "dialogs.view_dialogexport"],
    Role.CROWDWORKER: [],
}


def grant(apps, schema_editor):
    grant_permissions(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
