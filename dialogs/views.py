"""Pages for reading dialogs as chat transcripts (admins and researchers)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dialogs import selectors
from dialogs.models import Dialog
from groundwork.roles import permission_required


@permission_required("dialogs.view_dialog")
def dialog_list(request: HttpRequest) -> HttpResponse:
    purpose = request.GET.get("purpose") or None
    if purpose not in (None, *Dialog.Purpose.values):
        purpose = None
    page = Paginator(selectors.dialog_list(purpose=purpose), 50).get_page(request.GET.get("page"))
    return render(
        request,
        "dialogs/dialog_list.html",
        {"page": page, "purpose": purpose, "purposes": Dialog.Purpose.choices},
    )


@permission_required("dialogs.view_dialog")
def dialog_detail(request: HttpRequest, external_id: str) -> HttpResponse:
    try:
        dialog = selectors.dialog_with_turns(external_id=external_id)
    except Dialog.DoesNotExist:
        raise Http404("No dialog with this id.") from None
    return render(request, "dialogs/dialog_detail.html", {"dialog": dialog})
