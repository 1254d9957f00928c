import pytest

from groundwork.roles import Role

pytestmark = pytest.mark.django_db


def test_work_home_has_an_honest_empty_state(client, users) -> None:
    client.force_login(users[Role.CROWDWORKER])

    response = client.get("/work/")

    assert response.status_code == 200
    assert b"No campaigns are open to you yet" in response.content


def test_work_home_is_only_for_crowdworkers(client, users) -> None:
    client.force_login(users[Role.ADMIN])

    response = client.get("/work/")

    assert response.status_code == 403
    assert b"This page is for the crowdworker role." in response.content
