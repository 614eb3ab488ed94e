"""OpenAPI schema completion (drf-spectacular): authentication schemes, and the error responses
every operation can give, so the published schema matches what the server answers (a
schema-driven fuzzer, `scripts/fuzz_api.py`, checks it) and client generators get the errors.

Views document their own success bodies and their domain errors; this hook adds what the shared
machinery answers: 400 (`validation_error`, the input guard's codes), 401 (`not_authenticated`,
`invalid_token`, …) and 403 for authenticated operations, 404 for operations with path
parameters (an unknown id, or a path that matches no route), 405 and 415 from DRF's dispatch,
413 for a body over the limit (`payload_too_large`).
"""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

# The component drf-spectacular makes of ErrorSerializer (views use it through `errors()`).
ERROR_REF = {"$ref": "#/components/schemas/Error"}


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(required=False, help_text="Field errors or the code's own details.")


class ErrorSerializer(serializers.Serializer):
    """Every error: `{"error": {"code", "message", "details"?}}`."""

    error = ErrorBodySerializer()


DESCRIPTIONS = {
    "400": (
        "Invalid request: `validation_error` with field details, a domain code, or the input guard's"
        " `invalid_json`, `json_too_deep`, `invalid_string`, `integer_out_of_range`, `number_out_of_range`."
    ),
    "401": "Missing, malformed, expired or revoked credentials.",
    "403": "Authenticated, but not allowed to do this.",
    "404": "No such resource in the caller's school, or no such route.",
    "405": "Method not allowed on this path.",
    "409": "Conflicts with the current state (see the error code).",
    "413": "The request is larger than this operation accepts.",
    "415": "The request body is not JSON.",
    "429": "Too many attempts; retry after `Retry-After` seconds.",
    "503": "A service this operation needs is unavailable for a moment.",
}


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "harry_realtime.auth.JWTAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer", bearer_format="JWT"
        )


class RealtimeKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """supabase-js' REST broadcast: `apikey` header (the app key, or the user JWT), and optionally
    the user JWT as Bearer."""

    target_class = "events.api.broadcast.RealtimeKeyAuthentication"
    name = "apikeyAuth"
    priority = 1  # before the JWT scheme of its base class

    def get_security_requirement(self, auto_schema):
        # Either header authenticates; bearerAuth is the JWT scheme's definition.
        return [{"apikeyAuth": []}, {"bearerAuth": []}]

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "apikey"}


def errors(*codes: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """An operation's own error responses for `extend_schema(responses=...)`, e.g.
    `errors(404, 409, s409="Another teacher is marking this student.")`."""
    return {
        code: OpenApiResponse(
            ErrorSerializer, description=descriptions.get(f"s{code}", DESCRIPTIONS.get(str(code), ""))
        )
        for code in codes
    }


def _error_response(code: str) -> dict:
    return {"description": DESCRIPTIONS[code], "content": {"application/json": {"schema": ERROR_REF}}}


def _is_authenticated(operation: dict) -> bool:
    return any(requirement for requirement in operation.get("security", [{}]))


def add_error_responses(result, generator, request, public):
    """POSTPROCESSING_HOOKS: the shared error responses on every operation (views' own win)."""
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            codes = ["400", "405"]
            if operation.get("requestBody"):
                codes += ["413", "415"]
            if _is_authenticated(operation):
                codes += ["401", "403"]
            if "{" in path:
                codes.append("404")
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses.setdefault(code, _error_response(code))
    return result
