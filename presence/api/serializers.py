"""Request shapes of the spec's realtime endpoints (camelCase, as the apps send them)."""

from rest_framework import serializers

from events.models import LANGUAGES, PERFORMANCE_MODES, SUBSCRIPTION_TYPES
from school.models import AttendanceStatus

PLATFORMS = ["ios", "android", "web"]
DISCONNECT_REASONS = ["user_logout", "app_background", "prayer_time", "system_shutdown"]
PRIORITIES = ["low", "medium", "high", "critical"]
MAX_IDS = 50


class CulturalPreferencesSerializer(serializers.Serializer):
    language = serializers.ChoiceField(choices=LANGUAGES, required=False)
    islamicCalendarEnabled = serializers.BooleanField(required=False)
    prayerTimeNotifications = serializers.BooleanField(required=False)
    familyEngagement = serializers.BooleanField(required=False)


class ConnectSerializer(serializers.Serializer):
    deviceId = serializers.CharField(max_length=200)
    platform = serializers.ChoiceField(choices=PLATFORMS)
    appVersion = serializers.CharField(max_length=50)
    subscriptionTypes = serializers.ListField(
        child=serializers.ChoiceField(choices=SUBSCRIPTION_TYPES), max_length=len(SUBSCRIPTION_TYPES)
    )
    culturalPreferences = CulturalPreferencesSerializer(required=False, default=dict)
    performanceMode = serializers.ChoiceField(choices=PERFORMANCE_MODES, default="standard")
    networkType = serializers.ChoiceField(choices=["wifi", "cellular", "offline"], required=False)
    batteryLevel = serializers.IntegerField(min_value=0, max_value=100, required=False)


class DisconnectSerializer(serializers.Serializer):
    connectionId = serializers.UUIDField()
    reason = serializers.ChoiceField(choices=DISCONNECT_REASONS)
    syncPendingData = serializers.BooleanField(default=False)


def _ids():
    return serializers.ListField(child=serializers.UUIDField(), required=False, default=list, max_length=MAX_IDS)


class TargetEntitiesSerializer(serializers.Serializer):
    studentIds = _ids()
    groupIds = _ids()
    teacherIds = _ids()


class FiltersSerializer(serializers.Serializer):
    eventTypes = serializers.ListField(child=serializers.CharField(max_length=64), required=False, max_length=50)
    priority = serializers.ListField(child=serializers.ChoiceField(choices=PRIORITIES), required=False)
    cultural = serializers.DictField(required=False)


class OfflineSettingsSerializer(serializers.Serializer):
    bufferEvents = serializers.BooleanField(default=True)
    maxBufferSize = serializers.IntegerField(min_value=0, max_value=10000, default=1000)
    priorityThreshold = serializers.IntegerField(min_value=0, max_value=10, default=0)


class SubscribeSerializer(serializers.Serializer):
    connectionId = serializers.UUIDField()
    subscriptionType = serializers.ChoiceField(choices=SUBSCRIPTION_TYPES)
    targetEntities = TargetEntitiesSerializer(required=False, default=dict)
    filters = FiltersSerializer(required=False, default=dict)
    offlineSettings = OfflineSettingsSerializer(required=False, default=dict)


class UnsubscribeSerializer(serializers.Serializer):
    connectionId = serializers.UUIDField(required=False)
    flushBuffer = serializers.BooleanField(default=False)


class PresenceQuerySerializer(serializers.Serializer):
    group = serializers.UUIDField(required=False)
    scope = serializers.ChoiceField(choices=["organization"], required=False)

    def validate(self, attrs):
        if ("group" in attrs) == ("scope" in attrs):
            raise serializers.ValidationError("Give exactly one of `group` or `scope=organization`.")
        return attrs


class MarkingStartSerializer(serializers.Serializer):
    groupId = serializers.UUIDField()
    # Omitted: every student enrolled in the group.
    studentIds = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=200)
    override = serializers.BooleanField(default=False)


class MarkSerializer(serializers.Serializer):
    groupId = serializers.UUIDField()
    studentId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=AttendanceStatus.values)
    notes = serializers.CharField(max_length=2000, required=False, allow_blank=True)
    attendanceDate = serializers.DateField(required=False)
    override = serializers.BooleanField(default=False)
