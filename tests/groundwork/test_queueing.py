"""Services queue work by task name (``groundwork.queueing.enqueue("trainer.tasks.training_run_task",
…)``), so that a service never imports its app's tasks module, which imports the service. A
misspelt name would only show when a worker refuses the message: every name enqueued anywhere is
checked here against the tasks a worker registers."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from groundwork.celery import app

ROOT = Path(__file__).resolve().parents[2]
APPS = ("annotation", "dialogs", "groundwork", "toolset", "trainer")


def enqueued_names() -> dict[str, str]:
    """Each task name passed to ``enqueue`` as a string in our code, with where it is."""
    names: dict[str, str] = {}
    for package in APPS:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                called = (
                    node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                )
                first = node.args[0]
                if called == "enqueue" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                    names[first.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return names


def test_every_task_name_enqueued_is_a_registered_task() -> None:
    app.loader.import_default_modules()  # what a worker does when it starts: every app's tasks
    names = enqueued_names()

    assert {name: where for name, where in names.items() if name not in app.tasks} == {}
    assert {"trainer.tasks.dataset_build_task", "trainer.tasks.training_run_task"} <= set(names)  # found


def service_modules(app_name: str) -> list[ModuleType]:
    """``<app>.services``, and each module of it when it is a package."""
    services = importlib.import_module(f"{app_name}.services")
    if not hasattr(services, "__path__"):
        return [services]
    return [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(services.__path__, f"{services.__name__}.")
    ]


def test_every_task_is_named_after_the_service_it_calls() -> None:
    """One rule for task names in every app: a task is the name of the one service it calls, with
    ``_task`` (``dataset_build`` → ``trainer.tasks.dataset_build_task``)."""
    app.loader.import_default_modules()
    ours = sorted(name for name in app.tasks if name.split(".")[0] in APPS)
    misnamed = []
    for name in ours:
        app_name, _, function = name.partition(".tasks.")
        service = function.removesuffix("_task")
        if function == service or not any(hasattr(module, service) for module in service_modules(app_name)):
            misnamed.append(name)

    assert misnamed == []
    assert "annotation.tasks.item_aggregate_task" in ours  # found
