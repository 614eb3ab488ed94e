"""Sign-in sessions: a refresh-token family per sign-in, rotated on every refresh.

- `session_start`: sign-in; a new family, its first refresh token and an access token.
- `session_refresh`: spends a refresh token and returns the next pair. A token that was already
  spent (a stolen copy, or the thief's after the owner refreshed) revokes the whole family, so
  whoever holds the newest token of it must sign in again.
- `session_end`: sign-out; revokes the family of the caller's access token.

Access tokens are not looked up: they stay valid until they expire (JWT_ACCESS_TTL_SECONDS),
except that every request and socket join re-reads the user (a deactivated user is refused at
once) and sockets of deactivated users are closed (events/revocation.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .auth import REFRESH, TokenClaims, TokenError, encode_token, issue_access_token, load_user, verify_token
from .models import RefreshToken
from .tenancy import Tenant, tenant_context

audit = logging.getLogger("harry.audit")


def _tenant_of(user) -> Tenant:
    return Tenant(organization_id=user.organization_id, user_id=user.pk, role=user.role)


def _issue_pair(user, family_id: uuid.UUID) -> dict[str, str]:
    """Record the family's next refresh token and sign it with an access token. In a tenant context."""
    now = timezone.now()
    row = RefreshToken.objects.create(
        organization_id=user.organization_id,
        user=user,
        family_id=family_id,
        expires_at=now + timedelta(seconds=settings.JWT_REFRESH_TTL_SECONDS),
    )
    family = str(family_id)
    return {
        "access": issue_access_token(user, family_id=family),
        "refresh": encode_token(
            user, REFRESH, settings.JWT_REFRESH_TTL_SECONDS, token_id=str(row.pk), family_id=family
        ),
    }


@transaction.atomic
def session_start(*, user) -> dict[str, str]:
    """A signed-in user's first token pair, in a new family; prunes the user's expired tokens."""
    if not user.organization_id:
        raise TokenError("no_organization", "Platform accounts sign in to the admin only.")
    with tenant_context(_tenant_of(user)):
        RefreshToken.objects.filter(user=user, expires_at__lt=timezone.now()).delete()
        return _issue_pair(user, uuid.uuid4())


def _token_uuid(claims: TokenClaims) -> uuid.UUID:
    try:
        return uuid.UUID(claims.token_id or "")
    except ValueError:
        raise TokenError("invalid_token", "Invalid token: this refresh token was not issued by a sign-in.") from None


def _revoke_family(family_id: uuid.UUID) -> int:
    return RefreshToken.objects.filter(family_id=family_id, revoked_at__isnull=True).update(revoked_at=timezone.now())


def session_refresh(*, refresh: str) -> dict[str, str]:
    """The next pair of the refresh token's family; TokenError if it may not be spent.

    The reuse check and the family's revocation commit before the error is raised.
    """
    claims = verify_token(refresh, expected_type=REFRESH)
    token_id = _token_uuid(claims)
    with tenant_context(claims.tenant):
        user = load_user(claims)
        row = RefreshToken.objects.select_for_update().filter(pk=token_id, user_id=claims.user_id).first()
        if row is None:
            raise TokenError("invalid_token", "Invalid token: this refresh token is unknown or has expired.")
        if row.revoked_at is not None:
            raise TokenError("token_revoked", "This session was signed out; sign in again.")
        if row.used_at is None:
            row.used_at = timezone.now()
            row.save(update_fields=["used_at", "updated_at"])
            return _issue_pair(user, row.family_id)
        revoked = _revoke_family(row.family_id)
    audit.warning(
        "refresh_token_reused user=%s org=%s family=%s revoked=%d",
        claims.user_id,
        claims.organization_id,
        row.family_id,
        revoked,
    )
    raise TokenError(
        "refresh_token_reused", "This refresh token was already used; every token of its session is now revoked."
    )


@transaction.atomic
def session_end(*, claims: TokenClaims) -> int:
    """Revoke the refresh family of the caller's access token; the number of tokens revoked."""
    if not claims.family_id:
        return 0
    try:
        family_id = uuid.UUID(claims.family_id)
    except ValueError:
        return 0
    with tenant_context(claims.tenant):
        revoked = _revoke_family(family_id)
    audit.info(
        "session_ended user=%s org=%s family=%s revoked=%d", claims.user_id, claims.organization_id, family_id, revoked
    )
    return revoked
