from django.apps import AppConfig

from groundwork.roles import Role

MODELS = ("datasetversion", "trainingjob", "modelversion", "evaluation")


class TrainerConfig(AppConfig):
    name = "trainer"
    verbose_name = "Trainer"
    # Admins watch and export datasets; only researchers train, evaluate, import base models and
    # choose the serving model.
    role_grants = {
        Role.ADMIN: [f"trainer.view_{model}" for model in MODELS] + ["trainer.export_datasetversion"],
        Role.RESEARCHER: [f"trainer.view_{model}" for model in MODELS]
        + [
            "trainer.export_datasetversion",
            "trainer.run_trainingjob",
            "trainer.serve_modelversion",
            "trainer.add_modelversion",  # importing a base model (model_imports)
            "trainer.add_evaluation",
        ],
    }
