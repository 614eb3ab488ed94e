"""The one family of domain errors: what a service refuses, and why, in words a client can act on.

Services raise a `DomainError` subclass with a machine-readable `code`, a `message` safe to show
and optional structured `details`; the subclass says what kind of refusal it is. The edges map
kinds, never codes: `harry_realtime/api.py` to an HTTP status (`{"error": {code, message,
details}}`), the socket consumer to a protocol error reply. Services never name HTTP statuses.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal; nothing the refusing service began is left written (its transaction rolls back)."""

    def __init__(self, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    def as_error(self) -> dict[str, Any]:
        """`{code, message[, details]}`, the body of every error the API and the sync results carry."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return error


class Invalid(DomainError):
    """The request cannot be carried out as given (bad values, wrong state of the input)."""


class NotAuthenticated(DomainError):
    """Who is asking is not established (wrong credentials, bad or expired token)."""


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The thing named does not exist, or not for this caller (RLS hides other schools)."""


class Conflict(DomainError):
    """The request collides with the current state (someone else's claim, a finished item)."""


class TooLarge(DomainError):
    """A payload over its limit."""


class TooMany(DomainError):
    """Over a count or rate limit; `retry_after` (seconds), when known, says when to try again."""

    def __init__(self, code: str, message: str, details: Any = None, *, retry_after: int | None = None):
        super().__init__(code, message, details)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A service this needs is down for a moment; the same request may succeed later."""
