from django.apps import AppConfig


class ToolsetConfig(AppConfig):
    name = "toolset"
    verbose_name = "Toolset"
