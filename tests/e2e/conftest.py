"""Every browser test also checks that the Content-Security-Policy blocked nothing on its pages."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page


@pytest.fixture(autouse=True)
def csp_violations(page: Page) -> Iterator[list[str]]:
    """What Chromium refused under the page's Content-Security-Policy (an inline script, an
    inline handler, eval...); the test fails when anything was."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield violations
    assert violations == [], "blocked by the Content-Security-Policy:\n" + "\n".join(violations)
