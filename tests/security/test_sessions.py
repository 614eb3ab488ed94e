"""Issue 13 item 4 (REST side): refresh tokens rotate, reuse revokes the family, logout revokes it,
and a deactivated user cannot refresh."""

from __future__ import annotations

import time

import jwt
import pytest
from django.conf import settings

from harry_realtime.auth import verify_token
from harry_realtime.tenancy import dangerously_platform_context

pytestmark = pytest.mark.django_db


def _login(api, user) -> dict:
    response = api.post("/api/auth/token", {"username": user.username, "password": "harry-demo"}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _refresh(api, refresh: str):
    return api.post("/api/auth/token/refresh", {"refresh": refresh}, format="json")


def test_refresh_returns_a_new_refresh_token_and_the_old_one_stops_working(api, schools):
    first = _login(api, schools.a.student_user)
    response = _refresh(api, first["refresh"])
    assert response.status_code == 200
    second = response.json()
    assert second["refresh"] != first["refresh"]
    assert verify_token(second["access"]).user_id == str(schools.a.student_user.pk)

    replay = _refresh(api, first["refresh"])
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "refresh_token_reused"


def test_reusing_a_spent_refresh_token_revokes_the_whole_family(api, schools):
    first = _login(api, schools.a.student_user)
    second = _refresh(api, first["refresh"]).json()
    assert _refresh(api, first["refresh"]).status_code == 401  # the thief's copy, already spent

    # The newest token of the family (the one the thief or the owner holds) no longer works either.
    response = _refresh(api, second["refresh"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"
    from harry_realtime.models import RefreshToken

    with dangerously_platform_context():
        family = verify_token(second["refresh"], expected_type="refresh").family_id
        assert not RefreshToken.objects.filter(family_id=family, revoked_at__isnull=True).exists()


def test_reuse_revokes_only_its_own_family(api, schools):
    phone = _login(api, schools.a.teacher_user)
    laptop = _login(api, schools.a.teacher_user)
    _refresh(api, phone["refresh"])
    assert _refresh(api, phone["refresh"]).status_code == 401
    assert _refresh(api, laptop["refresh"]).status_code == 200


def test_logout_revokes_the_callers_refresh_family(api, schools):
    session = _login(api, schools.a.teacher_user)
    other_session = _login(api, schools.a.teacher_user)
    response = api.post("/api/auth/logout", HTTP_AUTHORIZATION=f"Bearer {session['access']}")
    assert response.status_code == 204

    refused = _refresh(api, session["refresh"])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "token_revoked"
    assert _refresh(api, other_session["refresh"]).status_code == 200


def test_logout_needs_an_access_token(api, schools):
    session = _login(api, schools.a.teacher_user)
    assert api.post("/api/auth/logout").status_code == 401
    # A refresh token is not an access token.
    response = api.post("/api/auth/logout", HTTP_AUTHORIZATION=f"Bearer {session['refresh']}")
    assert response.status_code == 401


def test_a_deactivated_user_cannot_refresh(api, schools):
    session = _login(api, schools.a.student_user)
    with dangerously_platform_context():
        type(schools.a.student_user).objects.filter(pk=schools.a.student_user.pk).update(is_active=False)
    response = _refresh(api, session["refresh"])
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_a_signed_refresh_token_that_no_sign_in_issued_is_refused(api, schools):
    user = schools.a.student_user
    now = int(time.time())
    forged = jwt.encode(
        {
            "sub": str(user.pk),
            "organization_id": str(user.organization_id),
            "role": user.role,
            "type": "refresh",
            "iat": now,
            "exp": now + 600,
            "iss": settings.JWT_ISSUER,
            "jti": "00000000-0000-4000-8000-000000000000",
        },
        settings.JWT_SIGNING_KEY,
        algorithm="HS256",
    )
    response = _refresh(api, forged)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_refresh_tokens_of_one_user_are_invisible_to_another(as_user, api, schools):
    from harry_realtime.models import RefreshToken

    _login(api, schools.a.student_user)
    _login(api, schools.a.teacher_user)
    with as_user(schools.a.teacher_user):
        assert {t.user_id for t in RefreshToken.objects.all()} == {schools.a.teacher_user.pk}
    with as_user(schools.b.teacher_user):
        assert not RefreshToken.objects.exists()
