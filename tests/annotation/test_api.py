from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from annotation.models import Assignment, Judgment
from groundwork.roles import Role
from tests.annotation.helpers import YES3, ssi_campaign
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/tasks/next"


def submit(client, assignment_id: int, answers: dict[str, str]):
    return client.post(f"/api/v1/assignments/{assignment_id}/submit", {"answers": answers}, format="json")


@pytest.fixture
def worker_client(api_client, users):
    api_client.force_authenticate(users[Role.CROWDWORKER])
    return api_client


def test_next_task_shows_context_response_and_questions(worker_client) -> None:
    campaign = ssi_campaign(items=1)

    response = worker_client.get(NEXT, {"kind": "ssi"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"assignment_id", "expires_at", "campaign", "item", "questions", "research_session"}
    assert body["research_session"] is None  # rewrite tasks only
    assert body["campaign"] == {"id": campaign.pk, "name": "ssi", "kind": "ssi"}
    assert body["item"]["context"] == [{"speaker": "user", "text": "Question 0?"}]
    assert body["item"]["response"] == {"speaker": "model", "text": "Answer 0."}
    assert [q["attribute"] for q in body["questions"]] == ["sensible", "specific", "interesting"]
    assert body["questions"][1]["requires_yes"] == "sensible"


def test_nothing_left_is_204(worker_client) -> None:
    ssi_campaign(items=1)

    assert worker_client.get(NEXT, {"kind": "safety"}).status_code == 204


def test_an_unknown_kind_is_a_400_that_says_so(worker_client) -> None:
    response = worker_client.get(NEXT, {"kind": "ssl"})

    assert response.status_code == 400
    assert "unknown campaign kind 'ssl'" in response.json()["detail"]


def test_submit_is_201_and_carries_the_next_assignment(worker_client) -> None:
    ssi_campaign(items=2)
    first = worker_client.get(NEXT, {"kind": "ssi"}).json()

    response = submit(worker_client, first["assignment_id"], YES3)

    assert response.status_code == 201
    body = response.json()
    assert body["judgments"] == YES3
    assert body["next"]["item"]["response"]["text"] == "Answer 1."
    assert body["next"]["assignment_id"] != first["assignment_id"]


def test_the_same_submission_again_is_200_with_the_stored_judgment(worker_client) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()

    first = submit(worker_client, task["assignment_id"], {"sensible": "no"})
    again = submit(worker_client, task["assignment_id"], {"sensible": "no"})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["judgments"] == {"sensible": "no", "specific": "no", "interesting": "no"}
    assert Judgment.objects.count() == 3


def test_other_answers_on_a_submitted_assignment_are_409(worker_client) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()
    submit(worker_client, task["assignment_id"], {"sensible": "no"})

    response = submit(worker_client, task["assignment_id"], YES3)

    assert response.status_code == 409
    assert "already submitted" in response.json()["detail"]


def test_a_late_submit_is_409_with_a_message(worker_client) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()
    Assignment.objects.filter(pk=task["assignment_id"]).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    response = submit(worker_client, task["assignment_id"], YES3)

    assert response.status_code == 409
    assert "lease on this item ran out" in response.json()["detail"]
    assert Judgment.objects.count() == 0


def test_another_workers_assignment_is_403(worker_client, api_client) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()
    api_client.force_authenticate(UserFactory(role=Role.CROWDWORKER))

    response = submit(api_client, task["assignment_id"], YES3)

    assert response.status_code == 403
    assert "another worker" in response.json()["detail"]


def test_a_missing_answer_is_400_naming_the_question(worker_client) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()

    response = submit(worker_client, task["assignment_id"], {"sensible": "yes"})

    assert response.status_code == 400
    assert response.json()["detail"] == "Specific: please answer yes, no or maybe."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"answers": "yes"}, "answers must be an object mapping each question to yes, no or maybe."),
        ({"answers": {"sensible": 1}}, "sensible: 1 is not an answer (yes, no or maybe)."),
        ({"answers": {"sensible": "yes"}, "claims_external": True}, "Send one of answers"),
    ],
)
def test_malformed_answers_are_400_saying_what_is_wrong(worker_client, body, message) -> None:
    ssi_campaign(items=1)
    task = worker_client.get(NEXT, {"kind": "ssi"}).json()

    response = worker_client.post(f"/api/v1/assignments/{task['assignment_id']}/submit", body, format="json")

    assert response.status_code == 400
    assert message in str(response.json())
    assert not Judgment.objects.exists()


def test_an_unknown_assignment_is_404(worker_client) -> None:
    assert submit(worker_client, 999999, YES3).status_code == 404


def test_skip_returns_the_next_and_never_offers_the_item_again(worker_client) -> None:
    ssi_campaign(items=2)
    first = worker_client.get(NEXT, {"kind": "ssi"}).json()

    response = worker_client.post(f"/api/v1/assignments/{first['assignment_id']}/skip")

    assert response.status_code == 200
    upcoming = response.json()["next"]
    assert upcoming["item"]["key"] != first["item"]["key"]
    submit(worker_client, upcoming["assignment_id"], YES3)
    assert worker_client.get(NEXT, {"kind": "ssi"}).status_code == 204


def test_a_worker_never_sees_other_workers_answers(worker_client, api_client) -> None:
    ssi_campaign(items=1)
    other = UserFactory(role=Role.CROWDWORKER)
    api_client.force_authenticate(other)
    theirs = api_client.get(NEXT, {"kind": "ssi"}).json()
    submit(api_client, theirs["assignment_id"], {"sensible": "no"})
    api_client.force_authenticate(None)

    worker_client.force_authenticate(UserFactory(role=Role.CROWDWORKER))
    mine = worker_client.get(NEXT, {"kind": "ssi"}).json()

    assert '"no"' not in str(mine).replace("'", '"')
    assert "judgments" not in mine
    assert "answers" not in str(mine)


def test_submit_and_next_make_a_fixed_number_of_queries(worker_client) -> None:
    """The hot path's query count does not grow with what the worker has done."""
    ssi_campaign(items=12)
    assignment_id = worker_client.get(NEXT, {"kind": "ssi"}).json()["assignment_id"]
    counts = []
    for _ in range(4):
        with CaptureQueriesContext(connection) as queries:
            body = submit(worker_client, assignment_id, YES3).json()
        counts.append(len(queries))
        assignment_id = body["next"]["assignment_id"]
    assert counts[1] == counts[2] == counts[3], counts
    assert counts[1] <= 25, [q["sql"] for q in queries.captured_queries]


# --- bad input: a JSON 4xx that names the field, never a 500 --------------------------------


@pytest.mark.parametrize("value", ["²", "١", "abc", "-1", "0", "1.5", "99999999999999999999"])
def test_a_campaign_parameter_that_is_no_campaign_id_is_a_400_naming_it(worker_client, value: str) -> None:
    """``str.isdigit`` takes "²", which ``int`` refuses (a 500); ids are ASCII digits only."""
    ssi_campaign(items=1)

    response = worker_client.get(NEXT, {"campaign": value})

    assert response.status_code == 400
    assert response.json() == {
        "campaign": [f"expected a whole number from 1 to 9223372036854775807, got {value!r}"]
    }


def test_a_campaign_parameter_that_is_a_campaign_id_leases_from_it(worker_client) -> None:
    campaign = ssi_campaign(items=1)

    response = worker_client.get(NEXT, {"campaign": str(campaign.pk)})

    assert response.status_code == 200
    assert response.json()["campaign"]["id"] == campaign.pk


@pytest.mark.parametrize("action", ["skip", "submit"])
@pytest.mark.parametrize("assignment_id", ["99999999999999999999", "9223372036854775808"])
def test_an_assignment_id_beyond_64_bits_is_a_json_404(
    worker_client, action: str, assignment_id: str
) -> None:
    """The hand-written SQL of the hot path took any number (SQLite: OverflowError, a 500)."""
    ssi_campaign(items=1)

    response = worker_client.post(
        f"/api/v1/assignments/{assignment_id}/{action}", {"answers": {"sensible": "no"}}, format="json"
    )

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_tool_call_ids_beyond_64_bits_are_a_400_naming_the_field(worker_client) -> None:
    ssi_campaign(items=1)
    lease = worker_client.get(NEXT).json()["assignment_id"]

    response = worker_client.post(
        f"/api/v1/assignments/{lease}/submit",
        {"answers": {"sensible": "no"}, "tool_call_ids": [2**63]},
        format="json",
    )

    assert response.status_code == 400
    assert "less than or equal to 9223372036854775807" in str(response.json()["tool_call_ids"])
    assert not Judgment.objects.exists()
