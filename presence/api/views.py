"""The spec's connection, subscription, presence and attendance-collaboration endpoints."""

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response

from culture.selectors import client_cultural_context, cultural_context_for
from events import profiles
from harry_realtime.api import TenantAPIView, created
from harry_realtime.errors import Invalid
from harry_realtime.openapi import errors
from school.services import user_family_engagement_set

from .. import attendance, selectors, services
from . import serializers as s


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def websocket_url(request) -> str:
    scheme = "wss" if request.is_secure() else "ws"
    return f"{scheme}://{request.get_host()}/realtime/v1/websocket?vsn=2.0.0"


class ConnectView(TenantAPIView):
    @extend_schema(request=s.ConnectSerializer, responses={200: s.ConnectResponseSerializer, **errors(429)})
    def post(self, request):
        data = _valid(s.ConnectSerializer, request.data)
        user = request.user
        preferences = {"language": user.language, **data["culturalPreferences"]}
        if "familyEngagement" in data["culturalPreferences"]:
            user_family_engagement_set(user=user, enabled=data["culturalPreferences"]["familyEngagement"])
        profile = profiles.ConnectionProfile(
            performance_mode=data["performanceMode"],
            battery_level=data.get("batteryLevel"),
            network_type=data.get("networkType"),
            app_state=data["appState"],
            connection_quality=data.get("connectionQuality"),
        )
        connection = services.connection_register(
            user=user,
            device_id=data["deviceId"],
            platform=data["platform"],
            app_version=data["appVersion"],
            subscription_types=data["subscriptionTypes"],
            cultural_preferences=preferences,
            profile=profile,
        )
        body = {
            "success": True,
            "connectionId": connection.connection_id,
            "websocketUrl": websocket_url(request),
            "subscriptionChannels": connection.channels,
            "heartbeatInterval": profiles.heartbeat_interval_ms(profile),
            "idleTimeout": profiles.idle_timeout_seconds(profile) * 1000,
            "culturalContext": client_cultural_context(cultural_context_for(user.organization, timezone.now())),
            # Only what the server enforces: the spec's encryptionEnabled/compressionEnabled
            # described the device's own store, which the server cannot know (docs/presence.md).
            "offlineCapabilities": {"maxQueueSize": settings.OFFLINE_MAX_QUEUE_SIZE},
        }
        if connection.omitted_channels:
            body["omittedChannels"] = connection.omitted_channels
        return Response(body)


class DisconnectView(TenantAPIView):
    @extend_schema(request=s.DisconnectSerializer, responses={200: s.DisconnectResponseSerializer, **errors(404)})
    def post(self, request):
        data = _valid(s.DisconnectSerializer, request.data)
        result = services.connection_close(
            user=request.user,
            connection_id=str(data["connectionId"]),
            reason=data["reason"],
            sync_pending_data=data["syncPendingData"],
        )
        return Response({"success": True, **result})


def _subscription_json(row) -> dict:
    return {
        "subscriptionId": str(row.pk),
        "channel": row.channel_name,
        "subscriptionType": row.subscription_type,
        "connectionStatus": row.connection_status,
        "expiresAt": row.expires_at,
    }


def _refuse_unapplied(options: list[str]) -> None:
    """Options the server would not apply are refused, never stored and silently ignored."""
    if options:
        raise Invalid(
            "unsupported_option",
            "These subscription options are not applied by this server; leave them out "
            "(events are stored and replayed on reconnect: docs/presence.md).",
            details={"options": options},
        )


def _unapplied_subscribe_options(raw: dict) -> list[str]:
    """Every `filters` key, and every `offlineSettings` key except `bufferEvents: true` (every
    event is stored, and a client that reconnects gets what it missed through replay or poll)."""
    filters = raw.get("filters") or {}
    offline = raw.get("offlineSettings") or {}
    options = [f"filters.{key}" for key in filters]
    options += [f"offlineSettings.{key}" for key, value in offline.items() if (key, value) != ("bufferEvents", True)]
    return options


class SubscribeView(TenantAPIView):
    @extend_schema(request=s.SubscribeSerializer, responses={201: s.SubscribeResponseSerializer, **errors(404, 409)})
    def post(self, request):
        data = _valid(s.SubscribeSerializer, request.data)
        _refuse_unapplied(_unapplied_subscribe_options(request.data))
        targets = {k: [str(i) for i in v] for k, v in data["targetEntities"].items()}
        rows = services.subscription_create(
            user=request.user,
            connection_id=str(data["connectionId"]),
            subscription_type=data["subscriptionType"],
            targets=targets,
            filters=data["filters"],
            offline_settings=data["offlineSettings"],
        )
        return created(
            {
                "success": True,
                "connectionId": str(data["connectionId"]),
                "subscriptions": [_subscription_json(r) for r in rows],
            }
        )


class UnsubscribeView(TenantAPIView):
    @extend_schema(request=s.UnsubscribeSerializer, responses={200: s.UnsubscribeResponseSerializer})
    def delete(self, request, subscription_id):
        data = _valid(s.UnsubscribeSerializer, request.data)
        # Nothing is buffered per subscription (events stay stored for replay), so nothing can be flushed.
        _refuse_unapplied(["flushBuffer"] if data["flushBuffer"] else [])
        connection_id = data.get("connectionId")
        services.subscription_delete(
            user=request.user,
            subscription_id=str(subscription_id),
            connection_id=str(connection_id) if connection_id else None,
        )
        return Response({"success": True, "subscriptionId": str(subscription_id)})


def _presence_json(row) -> dict:
    return {
        "userId": str(row.user_id),
        "userName": row.user_name,
        "userType": row.user_type,
        "deviceId": row.device_id,
        "status": row.status,
        "activity": row.activity,
        "customStatus": row.custom_status,
        "currentScreen": row.current_screen,
        "groupId": str(row.current_group_id) if row.current_group_id else None,
        "lessonId": str(row.current_lesson_id) if row.current_lesson_id else None,
        "platform": row.platform,
        "connectionQuality": row.connection_quality,
        "prayerTimeStatus": row.prayer_time_status,
        "currentPrayer": row.current_prayer,
        "lastSeen": row.last_seen,
        "statusChangedAt": row.status_changed_at,
        "sessionStart": row.session_start,
    }


class PresenceView(TenantAPIView):
    @extend_schema(parameters=[s.PresenceQuerySerializer], responses={200: s.PresenceResponseSerializer, **errors(404)})
    def get(self, request):
        query = _valid(s.PresenceQuerySerializer, request.query_params)
        user = request.user
        if "group" in query:
            rows = selectors.group_presence(user=user, group_id=query["group"])
            scope = {"scope": "group", "groupId": str(query["group"])}
        else:
            rows = selectors.organization_presence(user=user)
            scope = {"scope": "organization"}
        return Response(
            {
                **scope,
                "onlineUsers": len({r.user_id for r in rows}),
                "presence": [_presence_json(r) for r in rows],
            }
        )


class MarkingView(TenantAPIView):
    @extend_schema(
        request=s.MarkingStartSerializer, responses={200: s.MarkingStartResponseSerializer, **errors(404, 409)}
    )
    def post(self, request):
        data = _valid(s.MarkingStartSerializer, request.data)
        ids = data.get("studentIds")
        result = attendance.attendance_marking_start(
            user=request.user,
            group_id=data["groupId"],
            student_ids=[str(i) for i in ids] if ids is not None else None,
            override=data["override"],
        )
        return Response({"success": True, **result})


class MarkingFinishView(TenantAPIView):
    @extend_schema(responses={200: s.MarkingFinishResponseSerializer})
    def delete(self, request, group_id):
        return Response({"success": True, **attendance.attendance_marking_finish(user=request.user, group_id=group_id)})


class MarkView(TenantAPIView):
    @extend_schema(request=s.MarkSerializer, responses={200: s.MarkResponseSerializer, **errors(404, 409)})
    def post(self, request):
        data = _valid(s.MarkSerializer, request.data)
        row = attendance.attendance_mark(
            user=request.user,
            group_id=data["groupId"],
            student_id=data["studentId"],
            status=data["status"],
            notes=data.get("notes"),
            attendance_date=data.get("attendanceDate"),
            override=data["override"],
        )
        return Response(
            {
                "success": True,
                "attendance": {
                    "id": str(row.pk),
                    "studentId": str(row.student_id),
                    "groupId": str(row.group_id),
                    "teacherId": str(row.teacher_id),
                    "status": row.status,
                    "attendanceDate": row.attendance_date,
                    "markedBy": str(row.marked_by_id),
                    "syncVersion": row.sync_version,
                },
            }
        )
