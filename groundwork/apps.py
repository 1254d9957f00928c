from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


class GroundworkConfig(AppConfig):
    """The platform itself: accounts, roles, health, platform-wide commands. Holds no models."""

    name = "groundwork"
    verbose_name = "Groundwork"

    def ready(self) -> None:
        from groundwork.roles import sync_roles

        # post_migrate is sent once per app that has models (this one has none); auth's is
        # sent once per migrate and per test-database flush.
        post_migrate.connect(
            sync_roles, sender=apps.get_app_config("auth"), dispatch_uid="groundwork.sync_roles"
        )
