"""What the crowdworker pages share."""

from __future__ import annotations

from django.http import HttpResponseRedirect

from dialogs.models import Speaker


def see_other(url: str) -> HttpResponseRedirect:
    """303 to ``url``: after a form post, the browser GETs the page."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def context_turns(context: list[dict[str, str]]) -> list[dict[str, str]]:
    """An item's context as the transcript shows it: each turn with its speaker's label."""
    return [
        {"speaker": turn["speaker"], "label": _speaker_label(turn["speaker"]), "text": turn["text"]}
        for turn in context
    ]


def _speaker_label(speaker: str) -> str:
    return Speaker(speaker).label if speaker in Speaker.values else speaker
