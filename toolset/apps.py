from django.apps import AppConfig

from groundwork.roles import Role


class ToolsetConfig(AppConfig):
    name = "toolset"
    verbose_name = "Toolset"
    # What each role may do with this app's models in the admin (see groundwork.roles).
    # Tool calls are a log: nobody edits them. Every role may query the toolset (API).
    role_grants = {
        Role.ADMIN: [f"toolset.{action}_document" for action in ("add", "change", "delete", "view")]
        + ["toolset.view_toolcall"],
        Role.RESEARCHER: ["toolset.view_document", "toolset.view_toolcall"],
    }
