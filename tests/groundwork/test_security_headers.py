"""The Content-Security-Policy runs no inline script: every page says so, and no template has one."""

import re
from pathlib import Path

import pytest

from groundwork.roles import Role
from tests.factories import UserFactory

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]*\son[a-z]+\s*=", re.IGNORECASE)
JAVASCRIPT_URL = re.compile(r"""(?:href|action|src)\s*=\s*["']?\s*javascript:""", re.IGNORECASE)


def directives(header: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", ["/accounts/login/", "/work/", "/dialogs/", "/admin/", "/api/docs/", "/healthz"]
)
def test_every_page_carries_a_csp_that_runs_no_inline_script(client, url) -> None:
    if url != "/accounts/login/":
        client.force_login(UserFactory(role=Role.ADMIN, is_superuser=True))

    response = client.get(url)

    assert response.status_code == 200
    policy = directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_no_template_has_an_inline_script_or_event_handler(template: Path) -> None:
    text = template.read_text()

    assert not INLINE_SCRIPT.search(text), "an inline <script>: move it to a file under groundwork/static/"
    assert not EVENT_HANDLER.search(text), "an inline event handler (on...=): listen in a static script"
    assert not JAVASCRIPT_URL.search(text), "a javascript: URL"
