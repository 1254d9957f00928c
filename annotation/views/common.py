"""What the crowdworker pages share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse

from annotation import selectors
from annotation.errors import WorkerBlocked
from annotation.models import Assignment, Campaign
from annotation.services import assignments
from dialogs.models import Speaker


def see_other(url: str) -> HttpResponseRedirect:
    """303 to ``url``: after a form post, the browser GETs the page."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


# The page each campaign kind is worked on (the rating page for the others).
WORK_PAGES = {
    Campaign.Kind.GROUNDEDNESS_REWRITE: "work-rewrite",
    Campaign.Kind.HUMAN_RESPONSE: "work-write",
    Campaign.Kind.PAIRWISE: "work-compare",
}


def work_url(campaign: Campaign) -> str:
    """Where a worker works on ``campaign``: its kind's page."""
    return reverse(WORK_PAGES.get(campaign.kind, "work-rate"), args=[campaign.pk])


def context_turns(context: list[dict[str, str]]) -> list[dict[str, str]]:
    """An item's context as the transcript shows it: each turn with its speaker's label."""
    return [
        {"speaker": turn["speaker"], "label": _speaker_label(turn["speaker"]), "text": turn["text"]}
        for turn in context
    ]


def _speaker_label(speaker: str) -> str:
    return Speaker(speaker).label if speaker in Speaker.values else speaker


def own_campaign(request: HttpRequest, assignment_id: int) -> Campaign | None:
    """The campaign of the worker's own assignment; None for another worker's, which stays unseen."""
    return Campaign.objects.filter(
        items__assignments__pk=assignment_id, items__assignments__worker=request.user
    ).first()


@dataclass(frozen=True)
class Work:
    """The worker's item on a page: their lease (None when nothing is left or they are blocked,
    and why), and the counters."""

    assignment: Assignment | None
    blocked_reason: str
    counters: dict[str, Any]


def current_work(request: HttpRequest, campaign: Campaign, *, lease: bool = True) -> Work:
    """The worker's current item of ``campaign`` (leased now, or the lease they hold), with the
    items they did today and those left; ``lease`` False: the campaign is worked on elsewhere."""
    assignment: Assignment | None = None
    blocked_reason = ""
    if lease:
        try:
            assignment = assignments.assignment_lease_next(worker=request.user, campaign=campaign)
        except WorkerBlocked as blocked:  # not a failure of this request: the page says why
            blocked_reason = blocked.message
    counters = {
        "done_today": selectors.done_today(worker=request.user, campaign=campaign),
        # The item on screen is still to do, though it counts as seen.
        "left": selectors.left_for_worker(
            worker=request.user, campaign=campaign, holding=assignment is not None
        ),
    }
    return Work(assignment, blocked_reason, counters)
