import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from harry_realtime.inputguard import PlausibleDateTimeField
from notifications.models import LANGUAGES, NOTIFICATION_TYPES, PLATFORMS, PRIORITIES, DeviceToken, PushNotification


class DeviceRegisterSerializer(serializers.Serializer):
    platform = serializers.ChoiceField(choices=PLATFORMS)
    token = serializers.CharField(max_length=4096, trim_whitespace=True)
    app_version = serializers.CharField(max_length=64, required=False, allow_null=True, allow_blank=True)
    language = serializers.ChoiceField(choices=LANGUAGES, required=False, allow_null=True)

    def validate(self, attrs):
        if attrs["platform"] == "web":
            # A browser's PushSubscription.toJSON(): the push service endpoint and its keys.
            try:
                subscription = json.loads(attrs["token"])
            except ValueError:
                subscription = None
            keys = subscription.get("keys") if isinstance(subscription, dict) else None
            if not (
                isinstance(keys, dict)
                and isinstance(subscription.get("endpoint"), str)
                and subscription["endpoint"].startswith(("https://", "http://"))
                and keys.get("p256dh")
                and keys.get("auth")
            ):
                raise serializers.ValidationError({"token": "A web token is a PushSubscription JSON."})
            attrs["token"] = json.dumps(
                {"endpoint": subscription["endpoint"], "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}},
                sort_keys=True,
            )
        return attrs


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeviceToken
        fields = ["id", "platform", "app_version", "language", "is_active", "last_registered_at", "created_at"]


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "minLength": 1},
            {
                "type": "object",
                "properties": {lang: {"type": "string"} for lang in LANGUAGES},
                "required": ["en"],
                "additionalProperties": False,
            },
        ]
    }
)
class TextField(serializers.Field):
    """A plain string (English) or a mapping of en/uz/ru/ar to text, with English required."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                raise serializers.ValidationError("Must not be blank.")
            return data
        if isinstance(data, dict):
            unknown = set(data) - set(LANGUAGES)
            if unknown:
                raise serializers.ValidationError(f"Unknown languages: {sorted(unknown)}.")
            if not isinstance(data.get("en"), str) or not data["en"].strip():
                raise serializers.ValidationError("English text (en) is required.")
            if not all(isinstance(v, str) for v in data.values()):
                raise serializers.ValidationError("Texts must be strings.")
            return data
        raise serializers.ValidationError("Expected a string or an object of language: text.")

    def to_representation(self, value):
        return value


class SendSerializer(serializers.Serializer):
    target_user_ids = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=500)
    notification_type = serializers.ChoiceField(choices=NOTIFICATION_TYPES, default="system_alert")
    title = TextField()
    body = TextField()
    priority = serializers.ChoiceField(choices=PRIORITIES, default="normal")
    scheduled_for = PlausibleDateTimeField(required=False)
    expires_at = PlausibleDateTimeField(required=False)
    islamic_greeting = serializers.BooleanField(default=False)
    prayer_time_aware = serializers.BooleanField(default=True)
    ios_configuration = serializers.DictField(required=False)
    android_configuration = serializers.DictField(required=False)


class TeacherMessageSerializer(serializers.Serializer):
    student_id = serializers.UUIDField()
    message = serializers.CharField(max_length=2000)
    include_family = serializers.BooleanField(default=True)
    priority = serializers.ChoiceField(choices=PRIORITIES, default="normal")


class ActionSerializer(serializers.Serializer):
    action = serializers.CharField(max_length=100)


class NotificationSerializer(serializers.ModelSerializer):
    class Meta:
        model = PushNotification
        fields = [
            "id",
            "notification_type",
            "target_user",
            "title_en",
            "body_en",
            "priority",
            "scheduled_for",
            "expires_at",
            "delivery_status",
            "delivery_attempts",
            "sent_at",
            "opened_at",
            "action_taken",
            "action_taken_at",
            "created_at",
        ]


class DeviceListSerializer(serializers.Serializer):
    devices = DeviceSerializer(many=True)
