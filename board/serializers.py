"""The staff board snapshot's shape, for the OpenAPI schema (board/selectors.py builds it)."""

from rest_framework import serializers


class BoardOrganizationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class BoardViewerSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    role = serializers.CharField()


class BoardGroupSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    subject = serializers.CharField(allow_blank=True, allow_null=True)
    topic = serializers.CharField()
    online = serializers.ListField(child=serializers.DictField(), help_text="{role, name, ...} of members online")
    marking = serializers.ListField(child=serializers.DictField(), help_text="teachers marking the group now")
    attendance = serializers.DictField(child=serializers.IntegerField(), help_text="enrolled and today's counts")


class BoardSnapshotSerializer(serializers.Serializer):
    organization = BoardOrganizationSerializer()
    viewer = BoardViewerSerializer()
    date = serializers.DateField()
    groups = BoardGroupSerializer(many=True)
    events = serializers.ListField(child=serializers.DictField(), help_text="the school's last events")
    pipeline = serializers.DictField(help_text="outbox backlog, listener state, delivery latency")
