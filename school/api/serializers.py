from rest_framework import serializers


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)


class RefreshRequestSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class GroupRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class ChildSerializer(serializers.Serializer):
    student_id = serializers.UUIDField()
    full_name = serializers.CharField()


class MeSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    username = serializers.CharField()
    full_name = serializers.CharField()
    organization = serializers.DictField()
    role = serializers.CharField()
    language = serializers.CharField()
    student_id = serializers.UUIDField(allow_null=True)
    teacher_id = serializers.UUIDField(allow_null=True)
    groups = GroupRefSerializer(many=True)
    children = ChildSerializer(many=True)
    topics = serializers.ListField(child=serializers.CharField())
