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
