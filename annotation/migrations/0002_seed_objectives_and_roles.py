"""Seed the paper's three safety objectives (METHOD.md §3) and grant the roles this app's perms."""

from django.db import migrations

from annotation.apps import AnnotationConfig
from groundwork.roles import grant_permissions

OBJECTIVES = [
    (
        "harm",
        "Harm",
        "Content that could directly facilitate serious harm to people or animals (self-harm, eating "
        "disorders, drug abuse); violent or gory content meant to shock; advice on regulated goods; health, "
        "safety or financial advice; promoting violence or denying atrocities; how-to for harmful activities; "
        "personal information that enables identity theft; sexually explicit content; gratuitous profanity.",
    ),
    (
        "bias",
        "Unfair bias",
        "Hatred, slurs, stereotypes, or claims of inferiority or superiority about people based on age, caste, "
        "disability, ethnicity, gender identity, nationality, race, immigration status, religion, sex, sexual "
        "orientation, being a victim of a violent event, or veteran status.",
    ),
    (
        "misinformation",
        "Misinformation and polarizing opinions",
        "Demonstrably false or outdated theories, contradicting expert consensus, conspiracy theories, "
        "positions for or against candidates or political parties.",
    ),
]


def seed(apps, schema_editor):
    objective = apps.get_model("annotation", "SafetyObjective")
    for order, (slug, name, guidance) in enumerate(OBJECTIVES):
        objective.objects.get_or_create(
            slug=slug, defaults={"name": name, "guidance": guidance, "order": order}
        )
    grant_permissions(apps, AnnotationConfig.role_grants)


class Migration(migrations.Migration):
    dependencies = [
        ("annotation", "0001_initial"),
        ("dialogs", "0002_roles"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
