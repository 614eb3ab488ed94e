"""`GET /api/realtime/poll?since=<seq>&limit=&priority=`: the WebSocket fallback (spec)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from events import domain, selectors
from events.messages import messages_for
from events.recipients import broadcast_for_recipient, change_data_for_recipient
from events.topics import TopicReaders
from harry_realtime import inputguard
from harry_realtime.api import TenantAPIView
from harry_realtime.errors import Invalid

from .serializers import PollResponseSerializer


class PollQuerySerializer(serializers.Serializer):
    since = serializers.IntegerField(min_value=0, max_value=inputguard.INT_MAX, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=selectors.POLL_MAX, default=100)
    priority = serializers.CharField(required=False, allow_blank=True)

    def validate_priority(self, value: str) -> list[str]:
        priorities = [p.strip() for p in value.split(",") if p.strip()]
        unknown = [p for p in priorities if p not in domain.PRIORITY_ORDER]
        if unknown:
            raise serializers.ValidationError(f"unknown priority: {', '.join(unknown)}")
        return priorities


class PollView(TenantAPIView):
    """The user's visible events after `since`, in seq order, each as the messages of the topics
    this user may read (FERPA-filtered for this user, as on the socket), and `next` to pass as
    `since` next time."""

    @extend_schema(parameters=[PollQuerySerializer], responses={200: PollResponseSerializer})
    def get(self, request: Request) -> Response:
        query = PollQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise Invalid("invalid_poll_query", "The poll query is not valid.", details=query.errors)
        user = request.user
        rows, cursor = selectors.poll_events(
            user,
            since=query.validated_data["since"],
            limit=query.validated_data["limit"],
            priorities=query.validated_data.get("priority") or None,
        )
        # The same rules as the socket (events/ferpa.py): a topic's messages only for its readers
        # (the join rule), each message by the row rules and at the reader's FERPA level.
        readable = TopicReaders(user)
        events = []
        for event in rows:
            messages = []
            for topic, message in messages_for(event):
                if not readable(topic):
                    continue
                if message["type"] == "realtime.broadcast":
                    item = broadcast_for_recipient(message, user_id=user.pk, role=user.role)
                else:
                    data = change_data_for_recipient(
                        message, user_id=user.pk, role=user.role, organization_id=user.organization_id
                    )
                    item = None if data is None else {"type": "postgres_changes", "data": data}
                if item is not None:
                    messages.append({"topic": topic, **item})
            if messages:
                events.append(
                    {
                        "id": event.seq,
                        "event_type": event.event_type,
                        "priority": event.priority,
                        "created_at": event.created_at,
                        "messages": messages,
                    }
                )
        return Response({"events": events, "next": cursor})
