"""Request bodies of the broadcast endpoints (the spec's BroadcastEventRequest and supabase-js's)."""

from rest_framework import serializers

from events.models import PRIORITIES
from events.services import DELIVERY_METHODS, EVENT_TYPES, SCOPES
from harry_realtime.inputguard import PlausibleDateTimeField


class MultilingualTextSerializer(serializers.Serializer):
    en = serializers.CharField(max_length=2000)
    uz = serializers.CharField(max_length=2000, required=False)
    ru = serializers.CharField(max_length=2000, required=False)
    ar = serializers.CharField(max_length=2000, required=False)


class BroadcastPayloadSerializer(serializers.Serializer):
    title = MultilingualTextSerializer()
    content = MultilingualTextSerializer()
    actionData = serializers.DictField(required=False)
    culturalContext = serializers.DictField(required=False)


class DeliverySerializer(serializers.Serializer):
    priority = serializers.ChoiceField(choices=PRIORITIES)
    scheduledFor = PlausibleDateTimeField(required=False)
    expiresAt = PlausibleDateTimeField(required=False)
    methods = serializers.ListField(child=serializers.ChoiceField(choices=sorted(DELIVERY_METHODS)), allow_empty=False)


class CulturalSerializer(serializers.Serializer):
    islamicValuesCompliant = serializers.BooleanField()
    prayerTimeAware = serializers.BooleanField()
    multilingualContent = serializers.BooleanField()
    familyNotificationRequired = serializers.BooleanField()


class BroadcastEventRequestSerializer(serializers.Serializer):
    eventType = serializers.ChoiceField(choices=sorted(EVENT_TYPES))
    targetScope = serializers.ChoiceField(choices=SCOPES)
    targetIds = serializers.ListField(child=serializers.CharField(max_length=64), max_length=500)
    payload = BroadcastPayloadSerializer()
    delivery = DeliverySerializer()
    cultural = CulturalSerializer()


class BroadcastEventResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    seq = serializers.IntegerField()
    topics = serializers.ListField(child=serializers.CharField())
    scheduledFor = serializers.DateTimeField(allow_null=True)


class BroadcastEventResponseSerializer(serializers.Serializer):
    events = BroadcastEventResultSerializer(many=True)


class ClientBroadcastMessageSerializer(serializers.Serializer):
    topic = serializers.CharField(max_length=255)
    event = serializers.CharField(max_length=255)
    payload = serializers.JSONField(required=False, default=dict)
    private = serializers.BooleanField(required=False, default=False)


class ClientBroadcastRequestSerializer(serializers.Serializer):
    messages = ClientBroadcastMessageSerializer(many=True, allow_empty=False, max_length=100)


class PollEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="the event's seq")
    event_type = serializers.CharField()
    priority = serializers.CharField()
    created_at = serializers.DateTimeField()
    messages = serializers.ListField(
        child=serializers.DictField(), help_text="{topic, type: broadcast|postgres_changes, ...} as on the socket"
    )


class PollResponseSerializer(serializers.Serializer):
    events = PollEventSerializer(many=True)
    next = serializers.IntegerField(help_text="pass as `since` next time")
