"""factory_boy factories for the models of every app."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import Group, User

from dialogs.models import Dialog, Role, Speaker, Turn
from groundwork.roles import STAFF_ROLES

DEFAULT_PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    """A user; ``UserFactory(role=Role.ADMIN)`` puts it in the role's group (staff for admins
    and researchers), as ``groundwork.accounts.user_set_role`` does."""

    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", DEFAULT_PASSWORD)

    @factory.post_generation
    def role(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if extracted is not None:
            self.is_staff = extracted in STAFF_ROLES
        if create:
            self.save()
            if extracted is not None:
                self.groups.add(Group.objects.get(name=extracted.value))


class RoleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Role

    slug = factory.Sequence(lambda n: f"role-{n}")
    name = factory.Sequence(lambda n: f"Role {n}")


class DialogFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dialog

    external_id = factory.Sequence(lambda n: f"dialog-{n}")
    purpose = Dialog.Purpose.QUALITY
    source = "factory"


class TurnFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Turn

    dialog = factory.SubFactory(DialogFactory)
    index = factory.Sequence(lambda n: n)
    speaker = factory.Iterator([Speaker.USER, Speaker.MODEL])
    text = factory.Faker("sentence")


def dialog_with_turns(texts: list[str], **kwargs: Any) -> Dialog:
    """A dialog whose turns alternate user, model, ... with these texts."""
    dialog = DialogFactory(**kwargs)
    for index, text in enumerate(texts):
        TurnFactory(
            dialog=dialog, index=index, speaker=Speaker.USER if index % 2 == 0 else Speaker.MODEL, text=text
        )
    return dialog
