import pytest
from django.apps import apps
from django.contrib.auth.models import Group

from groundwork.roles import Role

pytestmark = pytest.mark.django_db


def granted(role: Role) -> set[str]:
    group = Group.objects.get(name=role.value)
    return {
        f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")
    }


def test_every_role_holds_every_permission_the_apps_grant_it() -> None:
    """After migrate, including permissions of models added after the app's role migration."""
    for role in Role:
        wanted = {
            perm
            for config in apps.get_app_configs()
            for perm in getattr(config, "role_grants", {}).get(role, [])
        }
        assert wanted <= granted(role), sorted(wanted - granted(role))
    assert "dialogs.view_candidate" in granted(Role.RESEARCHER)
    assert granted(Role.CROWDWORKER) == set()


@pytest.mark.django_db
def test_a_token_carries_its_users_roles_and_nothing_more() -> None:
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from tests.factories import UserFactory

    def answer(user: object) -> int:
        client = APIClient()
        token, _ = Token.objects.get_or_create(user=user)
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client.get("/api/v1/tasks/next").status_code

    crowdworker = UserFactory(role=Role.CROWDWORKER)
    admin = UserFactory(role=Role.ADMIN)
    nobody = UserFactory()
    superuser = UserFactory(is_superuser=True)
    inactive = UserFactory(role=Role.CROWDWORKER, is_active=False)

    assert answer(crowdworker) == 204  # a crowdworker endpoint; nothing to rate here
    assert answer(admin) == 403
    assert answer(nobody) == 403
    assert answer(superuser) == 204
    assert answer(inactive) == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert wrong.get("/api/v1/tasks/next").status_code == 401
