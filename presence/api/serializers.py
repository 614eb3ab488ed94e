"""Request shapes of the spec's realtime endpoints (camelCase, as the apps send them)."""

from rest_framework import serializers

from events.models import APP_STATES, CONNECTION_QUALITIES, LANGUAGES, PERFORMANCE_MODES, SUBSCRIPTION_TYPES
from harry_realtime.inputguard import PlausibleDateField
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
    appState = serializers.ChoiceField(choices=APP_STATES, default="foreground")
    connectionQuality = serializers.ChoiceField(choices=CONNECTION_QUALITIES, required=False)


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
    attendanceDate = PlausibleDateField(required=False)
    override = serializers.BooleanField(default=False)


# -- Response shapes (documentation: the views build these dicts) ------------------------------


class CulturalContextBriefSerializer(serializers.Serializer):
    currentPrayerTime = serializers.CharField(allow_null=True)
    currentPrayer = serializers.CharField(allow_null=True)
    nextPrayerTime = serializers.CharField(allow_null=True)
    nextPrayer = serializers.CharField(allow_null=True)
    prayerTimeStatus = serializers.CharField()
    prayerTimeRemaining = serializers.IntegerField(allow_null=True)
    ramadanMode = serializers.BooleanField()
    islamicDate = serializers.CharField(allow_null=True)


class OfflineCapabilitiesSerializer(serializers.Serializer):
    maxQueueSize = serializers.IntegerField()


class ConnectResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    connectionId = serializers.CharField()
    websocketUrl = serializers.CharField()
    subscriptionChannels = serializers.ListField(child=serializers.CharField())
    heartbeatInterval = serializers.IntegerField(help_text="milliseconds")
    culturalContext = CulturalContextBriefSerializer()
    offlineCapabilities = OfflineCapabilitiesSerializer()
    omittedChannels = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Channels over the per-connection limit."
    )


class DisconnectResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    connectionId = serializers.CharField()
    status = serializers.CharField()
    reason = serializers.ChoiceField(choices=DISCONNECT_REASONS)
    pendingSyncOperations = serializers.IntegerField(required=False, help_text="With syncPendingData.")


class SubscriptionSerializer(serializers.Serializer):
    subscriptionId = serializers.UUIDField()
    channel = serializers.CharField()
    subscriptionType = serializers.CharField()
    connectionStatus = serializers.CharField()
    expiresAt = serializers.DateTimeField(allow_null=True)


class SubscribeResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    connectionId = serializers.UUIDField()
    subscriptions = SubscriptionSerializer(many=True)


class UnsubscribeResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    subscriptionId = serializers.CharField()


class PresenceEntrySerializer(serializers.Serializer):
    userId = serializers.UUIDField()
    userName = serializers.CharField(allow_null=True, allow_blank=True)
    userType = serializers.CharField()
    deviceId = serializers.CharField(allow_null=True)
    status = serializers.CharField()
    activity = serializers.CharField(allow_null=True)
    customStatus = serializers.CharField(allow_null=True)
    currentScreen = serializers.CharField(allow_null=True)
    groupId = serializers.UUIDField(allow_null=True)
    lessonId = serializers.UUIDField(allow_null=True)
    platform = serializers.CharField(allow_null=True)
    connectionQuality = serializers.CharField(allow_null=True)
    prayerTimeStatus = serializers.CharField(allow_null=True)
    currentPrayer = serializers.CharField(allow_null=True)
    lastSeen = serializers.DateTimeField(allow_null=True)
    statusChangedAt = serializers.DateTimeField(allow_null=True)
    sessionStart = serializers.DateTimeField(allow_null=True)


class PresenceResponseSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["group", "organization"])
    groupId = serializers.UUIDField(required=False)
    onlineUsers = serializers.IntegerField()
    presence = PresenceEntrySerializer(many=True)


class MarkerSerializer(serializers.Serializer):
    teacherId = serializers.UUIDField(allow_null=True)
    userId = serializers.UUIDField()
    name = serializers.CharField(allow_blank=True)


class MarkingTeacherSerializer(serializers.Serializer):
    userId = serializers.UUIDField()
    name = serializers.CharField(allow_null=True, allow_blank=True)
    until = serializers.CharField()


class MarkingStartResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    groupId = serializers.UUIDField()
    studentIds = serializers.ListField(child=serializers.UUIDField())
    teacher = MarkerSerializer()
    until = serializers.CharField(help_text="ISO 8601, when the claims lapse")
    timestamp = serializers.IntegerField(help_text="milliseconds since the epoch")
    markingTeachers = MarkingTeacherSerializer(many=True)


class MarkingFinishResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    groupId = serializers.UUIDField()
    studentIds = serializers.ListField(child=serializers.UUIDField())
    teacher = MarkerSerializer()
    sessionEnded = serializers.BooleanField()
    timestamp = serializers.IntegerField()


class MarkedAttendanceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    studentId = serializers.UUIDField()
    groupId = serializers.UUIDField()
    teacherId = serializers.CharField()
    status = serializers.CharField()
    attendanceDate = serializers.DateField()
    markedBy = serializers.CharField()
    syncVersion = serializers.IntegerField()


class MarkResponseSerializer(serializers.Serializer):
    success = serializers.BooleanField()
    attendance = MarkedAttendanceSerializer()
