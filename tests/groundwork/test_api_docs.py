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


@pytest.mark.django_db
def test_swagger_ui_is_served_from_local_static_files(client) -> None:
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', response.content.decode())
    assert assets
    assert all(asset.startswith("/static/") for asset in assets), assets
