"""Platform views that belong to no app: what a URL that names nothing answers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/assignments/abc/skip", "/api/v1/nothing-here", "/api/v2/"])
def test_an_api_url_that_names_nothing_answers_json(client, path: str) -> None:
    response = client.post(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_page_url_that_names_nothing_answers_the_page(client) -> None:
    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
