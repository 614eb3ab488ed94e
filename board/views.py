"""The staff board: a page for school admins and teachers (session sign-in, as the admin), which
reads its data from `GET /api/realtime/board` and listens on the product's own realtime
protocol with the bundled realtime-js, using an access token the page fetches for its user."""

from __future__ import annotations

from django import forms
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from harry_realtime.api import TenantAPIView
from harry_realtime.auth import issue_access_token
from harry_realtime.errors import Forbidden
from harry_realtime.middleware import user_scope

from . import selectors
from .serializers import BoardSnapshotSerializer

LOGIN_URL = "board-login"


class BoardAuthenticationForm(AuthenticationForm):
    def confirm_login_allowed(self, user) -> None:
        super().confirm_login_allowed(user)
        if not selectors.may_use_board(user):
            raise forms.ValidationError("The staff board is for a school's admins and teachers.", code="not_staff")


class BoardLoginView(auth_views.LoginView):
    template_name = "board/login.html"
    authentication_form = BoardAuthenticationForm
    redirect_authenticated_user = False
    next_page = "/board/"


def _refused(request: HttpRequest) -> HttpResponse:
    return render(request, "board/refused.html", status=403)


@never_cache
@login_required(login_url=LOGIN_URL)
def board_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not selectors.may_use_board(user):
        return _refused(request)
    with user_scope(user):
        groups = selectors.board_groups(user)
    config = {
        "organizationId": str(user.organization_id),
        "userId": str(user.pk),
        "role": user.role,
        "token": issue_access_token(user),
        "tokenUrl": "/board/token",
        "snapshotUrl": "/api/realtime/board",
        "topics": [f"attendance:org_{user.organization_id}:group_{g.pk}" for g in groups],
        "roleTopic": f"notifications:org_{user.organization_id}:role_{user.role}",
    }
    return render(request, "board/board.html", {"config": config, "viewer": user})


@never_cache
@login_required(login_url=LOGIN_URL)
def board_token(request: HttpRequest) -> HttpResponse:
    """A fresh access token for the signed-in board user (the page renews its socket's auth)."""
    if not selectors.may_use_board(request.user):
        return JsonResponse({"error": {"code": "forbidden", "message": "Not a board user."}}, status=403)
    return JsonResponse({"access": issue_access_token(request.user)})


class BoardSnapshotView(TenantAPIView):
    """The staff board's figures for the caller's school: groups (online members, who is marking,
    today's attendance counts), the school's last events with their delivery status, and the
    pipeline's health. Admins see every group, teachers their own."""

    @extend_schema(responses={200: BoardSnapshotSerializer})
    def get(self, request):
        if not selectors.may_use_board(request.user):
            raise Forbidden("forbidden_role", "The staff board is for admins and teachers.")
        return Response(selectors.board_snapshot(request.user))
