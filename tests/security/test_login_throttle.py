"""Issue 13 item 7: failed sign-ins are throttled per account and per client address (429 with
Retry-After), the right password included once the limit is reached."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _login(api, username, password, address="10.0.0.1"):
    return api.post("/api/auth/token", {"username": username, "password": password}, format="json", REMOTE_ADDR=address)


def test_wrong_passwords_then_the_right_one_is_refused_with_retry_after(api, schools, settings):
    settings.LOGIN_MAX_FAILURES_PER_ACCOUNT = 5
    username = schools.a.teacher_user.username
    for _ in range(5):
        assert _login(api, username, "wrong").status_code == 401
    response = _login(api, username, "harry-demo")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_login_attempts"
    retry_after = int(response["Retry-After"])
    assert 0 < retry_after <= settings.LOGIN_FAILURE_WINDOW_SECONDS


def test_the_account_limit_holds_across_addresses(api, schools, settings):
    settings.LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    username = schools.a.teacher_user.username
    for n in range(3):
        assert _login(api, username, "wrong", address=f"10.0.1.{n}").status_code == 401
    assert _login(api, username, "harry-demo", address="10.0.1.200").status_code == 429
    # Another account from those addresses is not affected.
    assert _login(api, schools.a.student_user.username, "harry-demo", address="10.0.1.0").status_code == 200


def test_the_address_limit_holds_across_accounts(api, schools, settings):
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 4
    for n in range(4):
        assert _login(api, f"nobody{n}@nowhere", "wrong", address="10.0.2.1").status_code == 401
    response = _login(api, schools.a.teacher_user.username, "harry-demo", address="10.0.2.1")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert _login(api, schools.a.teacher_user.username, "harry-demo", address="10.0.2.2").status_code == 200


def test_usernames_are_counted_case_insensitively(api, schools, settings):
    settings.LOGIN_MAX_FAILURES_PER_ACCOUNT = 2
    username = schools.a.teacher_user.username
    _login(api, username.upper(), "wrong")
    _login(api, f" {username} ", "wrong")
    assert _login(api, username, "harry-demo").status_code == 429


def test_a_successful_sign_in_clears_the_account_count(api, schools, settings):
    settings.LOGIN_MAX_FAILURES_PER_ACCOUNT = 3
    username = schools.a.teacher_user.username
    for _ in range(2):
        _login(api, username, "wrong")
    assert _login(api, username, "harry-demo").status_code == 200
    for _ in range(2):
        assert _login(api, username, "wrong").status_code == 401
    assert _login(api, username, "harry-demo").status_code == 200
