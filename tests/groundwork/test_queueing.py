"""Services queue work by task name (``groundwork.queueing.enqueue("trainer.tasks.train_task",
…)``), so that a service never imports its app's tasks module, which imports the service. A
misspelt name would only show when a worker refuses the message: every name enqueued anywhere is
checked here against the tasks a worker registers."""

from __future__ import annotations

import ast
from pathlib import Path

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
    assert {"trainer.tasks.build_dataset_task", "trainer.tasks.train_task"} <= set(names)  # found
