from django.apps import AppConfig


class GroundworkConfig(AppConfig):
    """The platform itself: accounts, health, platform-wide commands. Holds no models."""

    name = "groundwork"
    verbose_name = "Groundwork"
