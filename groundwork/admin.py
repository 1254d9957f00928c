"""Admin pieces the apps share: read-only pages for rows only services write, an add page that
asks a service for the row, and a progress bar. Registers no model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

# (heading, description, field names): one fieldset of a service's add page.
Fieldset = tuple[str, str, Sequence[str]]


def progress_bar(done: int, total: int) -> str:
    """``<progress>`` with "done / total" beside it, for a list column or a page."""
    return format_html('<progress value="{}" max="{}"></progress> {} / {}', done, max(total, 1), done, total)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the services only: viewable, never changed or deleted by hand. The add
    page exists only where ``add_permission`` names the permission it needs (a request to a
    service, with ``ServiceAddMixin``)."""

    add_permission: str = ""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(self.add_permission) and request.user.has_perm(self.add_permission)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ServiceAddMixin:
    """The add page of a ``ModelAdmin`` whose rows a service makes: ``add_form`` shown in
    ``add_fieldsets``; a valid POST calls ``add_service(**form.service_kwargs(),
    created_by=request.user)`` and goes on to the new row's page; when the service refuses
    (``add_refused``), its reason is shown on the form."""

    add_form: type[forms.Form]
    add_service: Callable[..., Model]  # set with staticmethod(...)
    add_refused: type[Exception]
    add_title = ""
    add_submit = ""
    add_fieldsets: Sequence[Fieldset] = ()

    def get_add_form(self, request: HttpRequest) -> forms.Form:
        return self.add_form(request.POST or None)

    def added_message(self, obj: Any) -> str:
        return f"{obj} added."

    def refusal_messages(self, refusal: Exception) -> list[str]:
        """What the form says when the service refused (one message, or one a bad line)."""
        return [str(refusal)]

    def add_view(
        self: Any, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = self.get_add_form(request)
        if request.method == "POST" and form.is_valid():
            try:
                obj = self.add_service(**form.service_kwargs(), created_by=request.user)
            except self.add_refused as exc:
                form.add_error(None, self.refusal_messages(exc))
            else:
                self.log_addition(request, obj, [{"added": {}}])
                self.message_user(request, self.added_message(obj), messages.SUCCESS)
                opts = self.opts
                return HttpResponseRedirect(
                    reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "title": self.add_title,
            "submit_label": self.add_submit,
            "opts": self.opts,
            "form": form,
            "fieldsets": [
                (name, note, [form[f] for f in fields]) for name, note, fields in self.add_fieldsets
            ],
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/service_add_form.html", context)
