import base64
import json
import time

import jwt
import pytest
from django.conf import settings

from harry_realtime.auth import TokenError, issue_access_token, verify_token

pytestmark = pytest.mark.django_db


def _login(api, username, password="harry-demo"):
    return api.post("/api/auth/token", {"username": username, "password": password}, format="json")


def _forge(claims: dict, key: str | None = None) -> str:
    return jwt.encode(claims, key or settings.JWT_SIGNING_KEY, algorithm="HS256")


def _claims_of(user, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "sub": str(user.pk),
        "organization_id": str(user.organization_id),
        "role": user.role,
        "type": "access",
        "iat": now,
        "exp": now + 60,
        "iss": settings.JWT_ISSUER,
    }
    claims.update(overrides)
    return claims


def test_login_returns_a_pair_with_the_spec_claims(api, schools):
    response = _login(api, schools.a.teacher_user.username)
    assert response.status_code == 200
    claims = verify_token(response.json()["access"])
    assert claims.user_id == str(schools.a.teacher_user.pk)
    assert claims.organization_id == str(schools.a.org.pk)
    assert claims.role == "teacher"
    assert claims.expires_at > time.time()


def test_wrong_password_is_401_with_code(api, schools):
    response = _login(api, schools.a.teacher_user.username, "nope")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"


def test_unknown_user_is_401(api, schools):
    assert _login(api, "nobody@nowhere").status_code == 401


def test_missing_fields_are_400(api, schools):
    response = api.post("/api/auth/token", {"username": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "password" in response.json()["error"]["details"]


def test_refresh_gives_new_access(api, schools):
    pair = _login(api, schools.a.student_user.username).json()
    response = api.post("/api/auth/token/refresh", {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 200
    assert verify_token(response.json()["access"]).user_id == str(schools.a.student_user.pk)


def test_access_token_is_not_a_refresh_token(api, schools):
    pair = _login(api, schools.a.student_user.username).json()
    response = api.post("/api/auth/token/refresh", {"refresh": pair["access"]}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_me_with_expired_token_is_401(api, schools):
    token = _forge(_claims_of(schools.a.student_user, exp=int(time.time()) - 30))
    response = api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


def test_tampered_signature_is_refused(api, schools):
    token = _forge(_claims_of(schools.a.student_user), key="another-key-entirely-xxxxxxxxxxxxxxxx")
    response = api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_token"


def test_tampered_payload_is_refused(schools):
    token = _forge(_claims_of(schools.a.student_user))
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(TokenError) as error:
        verify_token(f"{header}.{forged}.{signature}")
    assert error.value.code == "invalid_token"


def test_alg_none_is_refused(api, schools):
    token = jwt.encode(_claims_of(schools.a.admin_user), key=None, algorithm="none")
    response = api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401


def test_token_naming_another_org_for_the_user_is_refused(api, schools):
    token = _forge(_claims_of(schools.a.student_user, organization_id=str(schools.b.org.pk)))
    response = api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401


def test_role_claim_must_match_the_user(api, schools):
    token = _forge(_claims_of(schools.a.student_user, role="admin"))
    assert api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401


def test_no_token_is_401(api, schools):
    response = api.get("/api/me")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_malformed_header_is_401(api, schools):
    response = api.get("/api/me", HTTP_AUTHORIZATION="Token abc")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "malformed_auth_header"


def test_platform_superuser_gets_no_api_token(api, schools):
    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import User

    with dangerously_platform_context():
        User.objects.create_superuser("root@platform.test", "harry-demo")
    response = _login(api, "root@platform.test")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_organization"


def test_inactive_user_token_stops_working(api, schools, as_user):
    token = issue_access_token(schools.a.student_user)
    with as_user(schools.a.admin_user):
        schools.a.student_user.is_active = False
        schools.a.student_user.save(update_fields=["is_active"])
    assert api.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
