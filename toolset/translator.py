"""The translator tool: ``hello in French`` → ``["Bonjour"]``, through a pluggable backend.

The backend is ``settings.TOOLSET_TRANSLATOR_BACKEND``, a dotted path to a class with
``translate(text, source, target) -> str | None`` and ``status() -> str``. The default uses
argostranslate with its installed language packages (English to the target language). When no
backend can translate, the tool returns ``[]`` and ``translator_status()`` says why, for the admin.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)

SOURCE_LANGUAGE = "en"
MAX_TEXT_CHARS = 500
LANGUAGES = {
    "arabic": "ar",
    "chinese": "zh",
    "dutch": "nl",
    "english": "en",
    "french": "fr",
    "german": "de",
    "greek": "el",
    "hindi": "hi",
    "italian": "it",
    "japanese": "ja",
    "korean": "ko",
    "polish": "pl",
    "portuguese": "pt",
    "russian": "ru",
    "spanish": "es",
    "swedish": "sv",
    "turkish": "tr",
    "ukrainian": "uk",
}
_LANGUAGE = "|".join(LANGUAGES)
_PATTERNS = [
    # "translate hello to French", "translate 'good night' into German"
    re.compile(rf"^\s*translate\s+(?P<text>.+?)\s+(?:to|into)\s+(?P<lang>{_LANGUAGE})\s*[?.!]?\s*$", re.I),
    # "how do you say hello in French?", "what is hello in French"
    re.compile(
        rf"^\s*(?:how\s+do\s+(?:you|i)\s+say|what\s+is)\s+(?P<text>.+?)\s+in\s+(?P<lang>{_LANGUAGE})\s*[?.!]?\s*$",
        re.I,
    ),
    # "hello in French"
    re.compile(rf"^\s*(?P<text>.+?)\s+in\s+(?P<lang>{_LANGUAGE})\s*[?.!]?\s*$", re.I),
]


@dataclass(frozen=True)
class TranslationRequest:
    text: str
    target: str  # ISO 639-1 code


class TranslatorBackend(Protocol):
    def translate(self, text: str, source: str, target: str) -> str | None: ...

    def status(self) -> str: ...


def parse_request(query: str) -> TranslationRequest | None:
    """What to translate into which language, or None when the query is not a translation."""
    if len(query) > MAX_TEXT_CHARS:
        return None
    for pattern in _PATTERNS:
        match = pattern.match(query)
        if match:
            text = match.group("text").strip().strip("\"'“”‘’").strip()
            if text:
                return TranslationRequest(text=text, target=LANGUAGES[match.group("lang").lower()])
    return None


def translate(query: str) -> list[str]:
    """The translation of a ``… in <language>`` query, or ``[]``."""
    request = parse_request(query)
    if request is None or request.target == SOURCE_LANGUAGE:
        return []
    result = backend().translate(request.text, SOURCE_LANGUAGE, request.target)
    return [result] if result else []


def translator_status() -> str:
    """Whether the translator can translate, and if not, why (shown in the admin)."""
    return backend().status()


@cache
def _backend(path: str) -> TranslatorBackend:
    return import_string(path)()


def backend() -> TranslatorBackend:
    return _backend(settings.TOOLSET_TRANSLATOR_BACKEND)


class ArgosTranslateBackend:
    """argostranslate with whatever language packages are installed (``argospm install …``)."""

    def __init__(self) -> None:
        self._module: Any = None
        self._error = ""
        try:
            from argostranslate import translate as argos_translate  # type: ignore[import-not-found]
        except ImportError:
            self._error = "argostranslate is not installed"
        else:
            self._module = argos_translate

    def _translation(self, source: str, target: str) -> Any:
        languages = {language.code: language for language in self._module.get_installed_languages()}
        if source not in languages or target not in languages:
            return None
        return languages[source].get_translation(languages[target])

    def translate(self, text: str, source: str, target: str) -> str | None:
        if self._module is None:
            return None
        translation = self._translation(source, target)
        return translation.translate(text) if translation is not None else None

    def status(self) -> str:
        if self._module is None:
            return self._error
        codes = sorted(language.code for language in self._module.get_installed_languages())
        if not codes:
            return (
                "argostranslate is installed but has no language packages (argospm install translate-en_fr)"
            )
        return f"argostranslate with languages: {', '.join(codes)}"


class NoTranslatorBackend:
    """A backend that never translates (TOOLSET_TRANSLATOR_BACKEND to switch the tool off)."""

    def translate(self, text: str, source: str, target: str) -> str | None:
        return None

    def status(self) -> str:
        return "the translator is switched off (TOOLSET_TRANSLATOR_BACKEND)"
