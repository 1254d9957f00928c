"""Crowdworker pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from groundwork.roles import Role, role_required


@role_required(Role.CROWDWORKER)
def work_home(request: HttpRequest) -> HttpResponse:
    """The crowdworker's home: the campaigns open to them (none until campaigns exist)."""
    return render(request, "annotation/work.html", {"campaigns": []})


@role_required(Role.CROWDWORKER)
def rate(request: HttpRequest, campaign_id: int) -> HttpResponse:
    return HttpResponse("Not built yet.", status=501)


@role_required(Role.CROWDWORKER)
def submit(request: HttpRequest, assignment_id: int) -> HttpResponse:
    return HttpResponse("Not built yet.", status=501)


@role_required(Role.CROWDWORKER)
def skip(request: HttpRequest, assignment_id: int) -> HttpResponse:
    return HttpResponse("Not built yet.", status=501)
