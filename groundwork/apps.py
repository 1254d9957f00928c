from typing import Any

from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def cache_table_ensure(*, using: str = "default", **kwargs: Any) -> None:
    """post_migrate: create the database cache's table when the cache is in the database
    (the default without CACHE_URL); a no-op for Redis and when the table exists."""
    from django.core.management import call_command

    call_command("createcachetable", database=using, verbosity=0)


class GroundworkConfig(AppConfig):
    """The platform itself: accounts, roles, health, platform-wide commands. Holds no models."""

    name = "groundwork"
    verbose_name = "Groundwork"

    def ready(self) -> None:
        from groundwork.roles import sync_roles

        # post_migrate is sent once per app that has models (this one has none); auth's is
        # sent once per migrate and per test-database flush.
        auth = apps.get_app_config("auth")
        post_migrate.connect(sync_roles, sender=auth, dispatch_uid="groundwork.sync_roles")
        post_migrate.connect(cache_table_ensure, sender=auth, dispatch_uid="groundwork.cache_table_ensure")
