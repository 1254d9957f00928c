from django.apps import AppConfig

from groundwork.roles import Role

MODELS = ("dialog", "turn", "candidate", "role", "dialogexport", "evaluationset", "evaluationcontext")


class DialogsConfig(AppConfig):
    name = "dialogs"
    verbose_name = "Dialogs"
    # What each role may do with this app's models in the admin (see groundwork.roles).
    role_grants = {
        Role.ADMIN: [
            f"dialogs.{action}_{model}" for model in MODELS for action in ("add", "change", "delete", "view")
        ]
        # Admins unlock accounts locked after failed logins.
        + ["axes.view_accessattempt", "axes.delete_accessattempt"],
        Role.RESEARCHER: [
            "dialogs.view_dialog",
            "dialogs.view_turn",
            "dialogs.view_candidate",
            "dialogs.view_role",
            "dialogs.add_dialogexport",
            "dialogs.view_dialogexport",
            # Researchers import evaluation sets and delete the ones no model was evaluated on.
            "dialogs.add_evaluationset",
            "dialogs.view_evaluationset",
            "dialogs.delete_evaluationset",
            "dialogs.view_evaluationcontext",
        ],
    }
