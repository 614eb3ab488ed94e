"""Broadcast endpoints: the spec's `POST /api/realtime/broadcast` (stored, then fanned out) and
supabase-js's REST fallback `POST /realtime/v1/api/broadcast` (and `httpSend`'s per-topic form)."""

from __future__ import annotations

import hmac

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response

from events.services import broadcast_event_create, client_broadcast_send
from harry_realtime.api import TenantAPIView
from harry_realtime.auth import JWTAuthentication, TokenError, load_user, verify_token
from harry_realtime.openapi import errors

from .serializers import (
    BroadcastEventRequestSerializer,
    BroadcastEventResponseSerializer,
    BroadcastEventResultSerializer,
    ClientBroadcastRequestSerializer,
)


class BroadcastEventView(TenantAPIView):
    @extend_schema(
        request=BroadcastEventRequestSerializer,
        responses={201: BroadcastEventResponseSerializer, **errors(413)},
        summary="Store an educational event for its targets, then deliver it to their topics",
    )
    def post(self, request):
        body = BroadcastEventRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        delivery = data["delivery"]
        events = broadcast_event_create(
            sender=request.user,
            event_type=data["eventType"],
            target_scope=data["targetScope"],
            target_ids=data["targetIds"],
            payload=body.data["payload"],
            priority=delivery["priority"],
            methods=delivery["methods"],
            scheduled_for=delivery.get("scheduledFor"),
            expires_at=delivery.get("expiresAt"),
            cultural=data["cultural"],
        )
        result = [
            {"id": e.pk, "seq": e.seq, "topics": e.event_metadata["topics"], "scheduledFor": e.scheduled_for}
            for e in events
        ]
        return Response({"events": BroadcastEventResultSerializer(result, many=True).data}, status=201)


FORBIDDEN_BROADCAST = (
    "The sender may not join a topic (`forbidden_topic`), may not broadcast on it"
    " (`broadcast_forbidden`), or used an event name the server sends (`reserved_event`);"
    " `details.index` is the refused message. Nothing was sent."
)


class RealtimeKeyAuthentication(JWTAuthentication):
    """supabase-js sends `apikey` always and `Authorization: Bearer` when it has a user token.

    With REALTIME_API_KEY configured the apikey must equal it; without one, the apikey may carry
    the user's JWT (as on the WebSocket).
    """

    def authenticate(self, request):
        apikey = request.headers.get("apikey", "")
        configured = settings.REALTIME_API_KEY
        if configured and not hmac.compare_digest(apikey.encode(), configured.encode()):
            raise exceptions.AuthenticationFailed("Invalid apikey.", "invalid_apikey")
        found = super().authenticate(request)
        if found is not None or configured or not apikey:
            return found
        try:
            claims = verify_token(apikey)
            user = load_user(claims)
        except TokenError as exc:
            raise exceptions.AuthenticationFailed(exc.message, exc.code) from None
        request.token_claims = claims
        return user, claims


class RealtimeBroadcastView(TenantAPIView):
    authentication_classes = [RealtimeKeyAuthentication]

    @extend_schema(
        request=ClientBroadcastRequestSerializer,
        responses={202: None, **errors(403, 413, s403=FORBIDDEN_BROADCAST)},
        summary="Client broadcast (REST)",
    )
    def post(self, request):
        body = ClientBroadcastRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        client_broadcast_send(sender=request.user, messages=body.validated_data["messages"])
        return Response(status=status.HTTP_202_ACCEPTED)


class RealtimeTopicEventView(TenantAPIView):
    """`channel.httpSend(event, payload)`: the JSON body is the payload."""

    authentication_classes = [RealtimeKeyAuthentication]

    @extend_schema(
        request={"application/json": {"description": "the broadcast payload: any JSON value"}},
        responses={202: None, **errors(403, 413, s403=FORBIDDEN_BROADCAST)},
        summary="Client broadcast to one topic (REST)",
    )
    def post(self, request, topic: str, event: str):
        message = {"topic": topic, "event": event, "payload": request.data}
        client_broadcast_send(sender=request.user, messages=[message])
        return Response(status=status.HTTP_202_ACCEPTED)
