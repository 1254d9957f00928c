from django.apps import AppConfig

from groundwork.roles import Role

ADMIN_MODELS = (
    "campaign",
    "item",
    "safetyobjective",
    "workerquality",
    "aggregationrun",
    "ratermodelrun",
    "chatrouting",
)
READ_ONLY = (
    "assignment",
    "judgment",
    "consensuslabel",
    "raterawarelabel",
    "raterestimate",
    "chat",
    "turnflag",
)
# Start an evaluation set's human baseline and side-by-side campaigns (the evaluation set's page).
EVALUATE_PERMISSION = "annotation.evaluate_campaign"


class AnnotationConfig(AppConfig):
    name = "annotation"
    verbose_name = "Annotation"
    # What each role may do with this app's models in the admin (see groundwork.roles).
    role_grants = {
        Role.ADMIN: [
            f"annotation.{action}_{model}"
            for model in ADMIN_MODELS
            for action in ("add", "change", "delete", "view")
        ]
        + [f"annotation.view_{model}" for model in READ_ONLY]
        + [EVALUATE_PERMISSION],
        Role.RESEARCHER: [EVALUATE_PERMISSION]
        + [
            f"annotation.view_{model}"
            for model in (
                "campaign",
                "item",
                "safetyobjective",
                "consensuslabel",
                "aggregationrun",
                "ratermodelrun",
                "chatrouting",
                "chat",
                "turnflag",
            )
        ],
    }
