import json
import re

import pytest
from django.core.management import call_command


def test_openapi_schema_has_no_warnings(tmp_path) -> None:
    """Every API view documents itself; drf-spectacular fails on any warning."""
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    schema = out.read_text()
    assert schema.startswith("openapi: 3")
    for path in ("/api/v1/dialogs/", "/api/v1/dialog-exports/", "/api/v1/auth/token/"):
        assert f"  {path}:" in schema


def test_openapi_schema_documents_token_revocation(tmp_path) -> None:
    out = tmp_path / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(out))
    token = json.loads(out.read_text())["paths"]["/api/v1/auth/token/"]

    assert set(token) == {"post", "delete"}
    assert "204" in token["delete"]["responses"]
    assert {"tokenAuth": []} in token["delete"]["security"]
    assert "security" not in token["post"]  # no credentials but the posted ones


@pytest.mark.django_db
def test_swagger_ui_is_served_from_local_files_with_no_inline_script(client) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    assert all(asset.startswith(("/static/", "/api/docs/?")) for asset in assets), assets
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    # Its setup script is a file of its own, served as JavaScript.
    script_url = next(a for a in assets if a.startswith("/api/docs/?")).replace("&amp;", "&")
    script = client.get(script_url)
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in script.content
