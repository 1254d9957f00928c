"""``TrainerAdmin``, the base of every trainer admin page (``trainer.admin``,
``trainer.evaluation_admin``)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from groundwork.admin import ReadOnlyAdmin, ServiceAddMixin
from trainer.services import requests


class TrainerAdmin(ServiceAddMixin, ReadOnlyAdmin):
    """A trainer row's pages: the list (its add button says what it asks for), the add page (a
    request to ``trainer.services.requests``) and the change page, whose read-only fields are
    followed by what ``page_context`` gives (progress, curves, lineage), polled as a panel."""

    add_label = ""  # what the list's add button says
    added_noun = ""  # "Dataset 7 queued"
    add_refused = requests.TrainerError
    change_list_template = "admin/trainer/change_list.html"

    def _visible(self, request: HttpRequest, object_id: str) -> Any:
        """The object of a custom view: 404 when missing, 403 without the view permission."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404(f"There is no {self.opts.verbose_name} {object_id}.")
        return obj

    def page_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        """What the change page shows below the read-only fields."""
        return {}

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_view_permission(request, obj):
            extra_context = {**(extra_context or {}), **self.page_context(request, obj)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _panel(self, request: HttpRequest, obj: Any, **extra: Any) -> TemplateResponse:
        """The change page's ``panel`` partial alone: what htmx polls while the row's work runs."""
        template = f"admin/{self.opts.app_label}/{self.opts.model_name}/change_form.html#panel"
        return TemplateResponse(request, template, self.page_context(request, obj, **extra))

    def _require(self, request: HttpRequest, perm: str) -> None:
        if not request.user.has_perm(perm):
            raise PermissionDenied

    def _url(self, name: str, *args: Any) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}", args=args)

    def added_message(self, obj: Any) -> str:
        return f"{self.added_noun} {obj.pk} queued; its progress shows below."

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        return super().changelist_view(request, {"add_label": self.add_label, **(extra_context or {})})
