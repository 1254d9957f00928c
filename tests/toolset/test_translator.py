"""``toolset.translator``: parsing translation queries; no backend installed here."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from toolset.translator import TranslationRequest, parse_request, translate, translator_status


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("hello in French", TranslationRequest("hello", "fr")),
        ("translate hello to French", TranslationRequest("hello", "fr")),
        ("Translate 'good night' into german", TranslationRequest("good night", "de")),
        ("How do you say thank you in Spanish?", TranslationRequest("thank you", "es")),
        ("How old is Rafael Nadal?", None),
        ("135+7721", None),
        ("hello in Klingon", None),
    ],
)
def test_queries_are_parsed(query: str, expected: TranslationRequest | None) -> None:
    assert parse_request(query) == expected


def test_without_argostranslate_nothing_is_translated_and_the_status_says_why() -> None:
    if importlib.util.find_spec("argostranslate"):
        pytest.skip("argostranslate is installed here")
    assert translate("hello in French") == []
    assert translator_status() == "argostranslate is not installed"


def test_another_backend_can_be_plugged_in(settings: Any) -> None:
    settings.TOOLSET_TRANSLATOR_BACKEND = "tests.toolset.test_translator.DictionaryBackend"
    assert translate("hello in French") == ["Bonjour"]
    assert translate("goodbye in French") == []
    assert translator_status() == "a test dictionary"


class DictionaryBackend:
    def translate(self, text: str, source: str, target: str) -> str | None:
        return {("hello", "en", "fr"): "Bonjour"}.get((text, source, target))

    def status(self) -> str:
        return "a test dictionary"
