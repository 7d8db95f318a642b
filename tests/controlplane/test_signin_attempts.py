"""Failed sign-ins are limited (django-axes): five wrong passwords for one username from one address,
or five from one address, and sign-ins from there answer 429 with a clear message until the cool-off
has passed; a success resets the count; API tokens are never affected."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.test import Client
from django.utils import timezone

from controlplane.choices import Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
MESSAGE = "Too many failed sign-ins; try again in 15 minutes."


@pytest.fixture
def ada(team):
    user = UserFactory(username="ada")
    user.set_password(PASSWORD)
    user.save()
    MembershipFactory(team=team, user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def grace(team):
    user = UserFactory(username="grace")
    user.set_password(PASSWORD)
    user.save()
    MembershipFactory(team=team, user=user, role=Role.VIEWER)
    return user


def sign_in(username: str, password: str, *, ip: str = "203.0.113.7", path: str = "/login/", client=None):
    client = client or Client()
    response = client.post(path, {"username": username, "password": password}, REMOTE_ADDR=ip)
    return client, response


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_five_wrong_passwords_lock_the_username_with_a_clear_message(ada):
    for _ in range(4):
        _, response = sign_in("ada", "wrong")
        assert response.status_code == 200
        assert "do not match" in response.content.decode()

    _, fifth = sign_in("ada", "wrong")

    assert fifth.status_code == 429
    page = fifth.content.decode()
    assert MESSAGE in page and "do not match" not in page
    assert fifth["Retry-After"] == str(15 * 60)


def test_the_right_password_during_the_lockout_is_refused(ada):
    for _ in range(5):
        sign_in("ada", "wrong")

    client, response = sign_in("ada", PASSWORD)

    assert response.status_code == 429 and MESSAGE in response.content.decode()
    assert not signed_in(client)


def test_another_user_from_another_address_signs_in_during_a_lockout(ada, grace):
    for _ in range(5):
        sign_in("ada", "wrong")

    client, response = sign_in("grace", PASSWORD, ip="198.51.100.20")

    assert response.status_code == 302 and signed_in(client)


def test_one_address_trying_many_usernames_is_locked_for_all_of_them(ada, grace):
    for name in ("root", "admin", "test", "guest", "oracle"):
        sign_in(name, "wrong")

    client, response = sign_in("grace", PASSWORD)

    assert response.status_code == 429 and not signed_in(client)
    # The same user elsewhere is not locked out by that address.
    elsewhere, ok = sign_in("grace", PASSWORD, ip="198.51.100.20")
    assert ok.status_code == 302 and signed_in(elsewhere)


def test_after_the_cool_off_the_right_password_works(ada):
    for _ in range(5):
        sign_in("ada", "wrong")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))

    client, response = sign_in("ada", PASSWORD)

    assert response.status_code == 302 and signed_in(client)


def test_a_success_resets_the_count(ada):
    for _ in range(4):
        sign_in("ada", "wrong")
    sign_in("ada", PASSWORD)
    for _ in range(4):
        _, response = sign_in("ada", "wrong")
        assert response.status_code == 200

    client, response = sign_in("ada", PASSWORD)
    assert response.status_code == 302 and signed_in(client)


def test_the_django_admin_login_is_limited_too(ada):
    ada.is_staff = True
    ada.save()
    for _ in range(5):
        sign_in("ada", "wrong", path="/admin/login/")

    client, response = sign_in("ada", PASSWORD, path="/admin/login/")

    assert response.status_code == 429
    assert MESSAGE in response.content.decode() and 'name="password"' in response.content.decode()
    assert not signed_in(client)


def test_api_tokens_work_from_a_locked_out_address(ada, api_for, team):
    for _ in range(5):
        sign_in("ada", "wrong", ip="127.0.0.1")
    api = api_for(team, role=Role.VIEWER)

    response = api.get("/api/v1/apps/", REMOTE_ADDR="127.0.0.1")

    assert response.status_code == 200


def test_authenticate_without_a_request_still_checks_the_password(ada):
    # Management commands and scripts on the server call authenticate() with no request.
    assert authenticate(username="ada", password=PASSWORD) == ada
    assert authenticate(username="ada", password="wrong") is None
