from django.contrib.auth import authenticate
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from harry_realtime.api import ApiError, TenantAPIView
from harry_realtime.auth import REFRESH, TokenError, issue_token_pair, load_user, verify_token
from school import selectors

from .serializers import MeSerializer, RefreshRequestSerializer, TokenPairSerializer, TokenRequestSerializer


class TokenView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=TokenRequestSerializer, responses=TokenPairSerializer)
    def post(self, request):
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(request, **body.validated_data)
        if user is None:
            raise ApiError("invalid_credentials", "Wrong username or password.", status_code=401)
        try:
            return Response(issue_token_pair(user))
        except TokenError as exc:
            raise ApiError(exc.code, exc.message, status_code=403) from None


class TokenRefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(request=RefreshRequestSerializer, responses=TokenPairSerializer)
    def post(self, request):
        body = RefreshRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            user = load_user(verify_token(body.validated_data["refresh"], expected_type=REFRESH))
        except TokenError as exc:
            raise ApiError(exc.code, exc.message, status_code=401) from None
        return Response(issue_token_pair(user))


class MeView(TenantAPIView):
    @extend_schema(responses=MeSerializer)
    def get(self, request):
        return Response(MeSerializer(selectors.profile_of(request.user)).data)
