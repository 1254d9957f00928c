"""A real task through a real worker process on the real broker, seen in the database."""

import json
import time
from pathlib import Path

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult

from dialogs.models import DialogExport
from dialogs.services import dialog_export_request
from groundwork.celery import app as celery_app
from groundwork.roles import Role
from tests.factories import UserFactory, dialog_with_turns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def wait_for(export_id: int, seconds: float = 30) -> DialogExport:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        export = DialogExport.objects.get(pk=export_id)
        if export.status in (DialogExport.Status.DONE, DialogExport.Status.FAILED):
            return export
        time.sleep(0.1)
    raise AssertionError(f"export {export_id} still {export.status} after {seconds}s")


def test_settings_give_three_queues_with_late_acks() -> None:
    assert [q.name for q in celery_app.conf.task_queues] == ["default", "training", "inference"]
    assert celery_app.conf.task_acks_late is True
    assert celery_app.conf.task_reject_on_worker_lost is True


def test_export_requested_through_the_api_is_written_by_the_worker(celery_worker, api_client) -> None:
    dialog_with_turns(["Hi", "Hello! How are you?"], external_id="w-1", purpose="quality")
    dialog_with_turns(["Tell me a joke", "Why did the chicken..."], external_id="w-2", purpose="safety")
    api_client.force_login(UserFactory(role=Role.RESEARCHER))

    response = api_client.post("/api/v1/dialog-exports/", {"purpose": "quality"}, format="json")
    assert response.status_code == 202

    export = wait_for(response.json()["id"])
    assert export.status == DialogExport.Status.DONE, export.error
    assert export.dialog_count == 1
    lines = Path(export.path).read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["w-1"]
    assert api_client.get(f"/api/v1/dialog-exports/{export.pk}/").json()["status"] == "done"


def test_nothing_is_enqueued_when_the_transaction_rolls_back(celery_worker) -> None:
    user = UserFactory(role=Role.ADMIN)

    class Abort(Exception):
        pass

    def request_then_roll_back() -> None:
        with transaction.atomic():
            dialog_export_request(requested_by=user)
            raise Abort

    with pytest.raises(Abort):
        request_then_roll_back()
    export = dialog_export_request(requested_by=user)

    # The worker takes messages in order: once the committed request is done, a message sent
    # for the rolled-back one would have been tried (and its failure stored) before it.
    assert wait_for(export.pk).status == DialogExport.Status.DONE
    assert DialogExport.objects.count() == 1
    runs = TaskResult.objects.filter(task_name="dialogs.tasks.dialog_export_run_task")
    assert list(runs.values_list("status", flat=True)) == ["SUCCESS"]
