from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from events.topics import topics_for_user
from harry_realtime import services as sessions
from harry_realtime import throttle
from harry_realtime.api import TenantAPIView
from harry_realtime.auth import TokenError
from harry_realtime.errors import Forbidden, NotAuthenticated, TooMany, Unavailable
from harry_realtime.openapi import errors
from school import selectors
from school.models import User

from .serializers import MeSerializer, RefreshRequestSerializer, TokenPairSerializer, TokenRequestSerializer


def _throttle_unavailable() -> Unavailable:
    return Unavailable("login_unavailable", "Sign-in is unavailable for a moment; try again.")


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenPairSerializer,
            **errors(
                401,
                403,
                429,
                503,
                s401="Wrong username or password (`invalid_credentials`).",
                s403="A platform account without a school (`no_organization`).",
                s429="Too many failed sign-ins for this account or address (`too_many_login_attempts`).",
            ),
        },
        auth=[],
    )
    def post(self, request):
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        username = body.validated_data["username"]
        # uvicorn sets the client address from X-Forwarded-For only for --forwarded-allow-ips.
        address = request.META.get("REMOTE_ADDR", "")
        try:
            wait = throttle.login_wait_seconds(username=username, address=address)
            if wait:
                raise TooMany(
                    "too_many_login_attempts",
                    f"Too many failed sign-ins; try again in {wait} seconds.",
                    retry_after=wait,
                )
            user = authenticate(request, **body.validated_data)
            if user is None:
                throttle.login_failed(username=username, address=address)
                raise NotAuthenticated("invalid_credentials", "Wrong username or password.")
            throttle.login_succeeded(username=username)
        except throttle.ThrottleUnavailable:
            raise _throttle_unavailable() from None
        try:
            return Response(sessions.session_start(user=user))
        except TokenError as exc:
            raise Forbidden(exc.code, exc.message) from None


class TokenRefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=RefreshRequestSerializer,
        responses={
            200: TokenPairSerializer,
            **errors(
                401,
                s401="Invalid or expired (`invalid_token`, `token_expired`), signed out (`token_revoked`) or"
                " already spent (`refresh_token_reused`: the whole session is revoked).",
            ),
        },
        auth=[],
    )
    def post(self, request):
        body = RefreshRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            return Response(sessions.session_refresh(refresh=body.validated_data["refresh"]))
        except TokenError as exc:
            raise NotAuthenticated(exc.code, exc.message) from None


class LogoutView(APIView):
    """Sign out: the refresh tokens of the caller's session stop working."""

    @extend_schema(request=None, responses={204: None})
    def post(self, request):
        sessions.session_end(claims=request.auth)
        return Response(status=204)


class MeView(TenantAPIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request):
        return Response(MeSerializer(profile_of(request.user)).data)


def profile_of(user: User) -> dict:
    """What the apps need about the signed-in user, including the topics they may join."""
    student = selectors.student_for_user(user)
    teacher = selectors.teacher_for_user(user)
    org = user.organization
    return {
        "id": user.pk,
        "username": user.username,
        "full_name": user.full_name,
        "organization": {"id": str(org.pk), "name": org.name, "slug": org.slug, "timezone": org.timezone},
        "role": user.role,
        "language": user.language,
        "student_id": student.pk if student else None,
        "teacher_id": teacher.pk if teacher else None,
        "groups": [{"id": g.pk, "name": g.name} for g in selectors.groups_of_user(user)],
        "children": [{"student_id": s.pk, "full_name": s.full_name} for s in selectors.children_of(user)],
        "topics": topics_for_user(user),
    }
