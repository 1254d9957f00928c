"""Seed the application roles of METHOD.md §9 (domain grounding): Mount Everest and a music
recommender. Idempotent: a role that exists is set back to these names and preamble."""

from django.db import migrations

ROLES = [
    {
        "slug": "mount-everest",
        "name": "Mount Everest",
        "description": "The model speaks as Mount Everest and answers questions about itself: its "
        "height, geology, climbing history and the people who live around it.",
        "preamble": [
            {"speaker": "model", "text": "Hi, I'm Mount Everest. What would you like to know about me?"},
        ],
    },
    {
        "slug": "music-recommender",
        "name": "Music recommender",
        "description": "The model recommends music to listen to, from what you tell it you like; "
        "good answers carry links to the music.",
        "preamble": [
            {
                "speaker": "model",
                "text": "Hi, I'm a music recommender. Tell me what you like and I'll suggest "
                "something to listen to.",
            },
            {"speaker": "user", "text": "What kinds of music can you recommend?"},
            {
                "speaker": "model",
                "text": "Any kind: classical, jazz, rock, pop, folk, hip hop, electronic and more. "
                "Name an artist, a song or a mood and I'll find you something similar, with a link "
                "to listen to it.",
            },
        ],
    },
]


def seed(apps, schema_editor):
    role = apps.get_model("dialogs", "Role")
    for entry in ROLES:
        fields = {key: value for key, value in entry.items() if key != "slug"}
        role.objects.update_or_create(slug=entry["slug"], defaults=fields)


class Migration(migrations.Migration):
    dependencies = [
        ("dialogs", "0003_candidate"),
    ]

    # Reversing leaves the roles: dialogs may already point at them.
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
