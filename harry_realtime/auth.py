"""JWT issue and verification, shared by the REST API and WebSocket joins."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from rest_framework import authentication, exceptions

from .tenancy import Tenant, dangerously_platform_context, tenant_context

ACCESS = "access"
REFRESH = "refresh"


class TokenError(Exception):
    """A token that must not be honoured; `code` is machine-readable."""

    def __init__(self, code: str, message: str, expired_seconds_ago: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.expired_seconds_ago = expired_seconds_ago


@dataclass(frozen=True)
class TokenClaims:
    user_id: str
    organization_id: str
    role: str
    expires_at: int
    token_type: str
    # `jti`: a refresh token's row in auth_refresh_tokens. `fam`: the sign-in session (refresh
    # family) an access or refresh token belongs to; tokens minted outside a session have none.
    token_id: str | None = None
    family_id: str | None = None

    @property
    def tenant(self) -> Tenant:
        return Tenant(organization_id=self.organization_id, user_id=self.user_id, role=self.role)

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (now if now is not None else time.time())


def encode_token(user, token_type: str, ttl: int, *, token_id: str | None = None, family_id: str | None = None) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user.pk),
        "organization_id": str(user.organization_id),
        "role": user.role,
        "type": token_type,
        "iat": now,
        "exp": now + ttl,
        "iss": settings.JWT_ISSUER,
        "jti": token_id or uuid.uuid4().hex,
    }
    if family_id:
        claims["fam"] = family_id
    return jwt.encode(claims, settings.JWT_SIGNING_KEY, algorithm=settings.JWT_ALGORITHM)


def issue_access_token(user, *, family_id: str | None = None) -> str:
    """An access token (no database write). Sign-in and refresh go through harry_realtime.services,
    which also record the refresh token."""
    if not user.organization_id:
        raise TokenError("no_organization", "Platform accounts sign in to the admin only.")
    return encode_token(user, ACCESS, settings.JWT_ACCESS_TTL_SECONDS, family_id=family_id)


def verify_token(token: str, *, expected_type: str = ACCESS) -> TokenClaims:
    """Verify signature, algorithm, issuer, expiry and type; raise TokenError otherwise."""
    if not token or not isinstance(token, str):
        raise TokenError("missing_token", "No token was given.")
    try:
        payload = jwt.decode(
            token,
            settings.JWT_SIGNING_KEY,
            algorithms=[settings.JWT_ALGORITHM],
            issuer=settings.JWT_ISSUER,
            options={"require": ["exp", "sub", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        expired = _unverified_exp(token)
        ago = int(time.time() - expired) if expired else 0
        raise TokenError("token_expired", f"Token has expired {ago} seconds ago", ago) from None
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", f"Invalid token: {exc}") from None
    if payload.get("type") != expected_type:
        raise TokenError("invalid_token", f"Invalid token: expected a {expected_type} token.")
    for claim in ("organization_id", "role"):
        if not payload.get(claim):
            raise TokenError("invalid_token", f"Invalid token: missing claim {claim!r}.")
    return TokenClaims(
        user_id=payload["sub"],
        organization_id=payload["organization_id"],
        role=payload["role"],
        expires_at=int(payload["exp"]),
        token_type=payload["type"],
        token_id=_optional_str(payload.get("jti")),
        family_id=_optional_str(payload.get("fam")),
    )


def _optional_str(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _unverified_exp(token: str) -> int | None:
    try:
        return int(jwt.decode(token, options={"verify_signature": False})["exp"])
    except Exception:  # noqa: BLE001 - only used to word an error message
        return None


def load_user(claims: TokenClaims):
    """The active user a verified token names, read under that token's own tenant context."""
    from django.contrib.auth import get_user_model

    with tenant_context(claims.tenant):
        user = get_user_model().objects.filter(pk=claims.user_id, organization_id=claims.organization_id).first()
    if user is None or not user.is_active or user.role != claims.role:
        raise TokenError("invalid_token", "Invalid token: the user no longer matches it.")
    return user


class JWTAuthentication(authentication.BaseAuthentication):
    """DRF: `Authorization: Bearer <access token>`."""

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        parts = header.split()
        if len(parts) != 2 or parts[0] != self.keyword:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.", "malformed_auth_header")
        try:
            claims = verify_token(parts[1])
            user = load_user(claims)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(exc.message, exc.code) from None
        request.token_claims = claims
        return user, claims

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


class TenantAwareModelBackend(ModelBackend):
    """Password and session lookups happen before any tenant is known, so they run as platform.

    This is the authentication bypass: it reads one user row by username or id, nothing else.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        with dangerously_platform_context():
            return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id):
        with dangerously_platform_context():
            return super().get_user(user_id)
