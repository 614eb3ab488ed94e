"""`POST /api/realtime/announcements` (admins) and `GET /api/realtime/announcements/{id}`: a
school-wide message and its delivery summary (events/announcements.py)."""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response

from events.announcements import announcement_create, announcement_delivery
from events.models import ANNOUNCEMENT_AUDIENCES, ANNOUNCEMENT_KINDS, LANGUAGES, Announcement
from harry_realtime.api import TenantAPIView, created
from harry_realtime.errors import Forbidden, NotFound
from harry_realtime.openapi import errors
from school.models import Role

MAX_TITLE, MAX_MESSAGE = 200, 2000


@extend_schema_field(OpenApiTypes.OBJECT)
class MultilingualTextField(serializers.Field):
    """A string (English) or `{"en": ..., "uz"?, "ru"?, "ar"?}`."""

    def __init__(self, *, max_length: int, **kwargs):
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        texts = {"en": data} if isinstance(data, str) else data
        if not isinstance(texts, dict) or set(texts) - set(LANGUAGES):
            raise serializers.ValidationError(f"Give a string or an object with keys among {', '.join(LANGUAGES)}.")
        if not isinstance(texts.get("en"), str) or not texts["en"].strip():
            raise serializers.ValidationError("The English text (`en`) is required.")
        for language, text in texts.items():
            if not isinstance(text, str) or len(text) > self.max_length:
                raise serializers.ValidationError(f"`{language}`: a string of at most {self.max_length} characters.")
        return {language: text for language, text in texts.items() if text.strip()}

    def to_representation(self, value):
        return value


class AnnouncementRequestSerializer(serializers.Serializer):
    type = serializers.ChoiceField(choices=ANNOUNCEMENT_KINDS)
    title = MultilingualTextField(max_length=MAX_TITLE)
    message = MultilingualTextField(max_length=MAX_MESSAGE)
    audience = serializers.ChoiceField(choices=ANNOUNCEMENT_AUDIENCES)
    expiresInHours = serializers.IntegerField(min_value=1, max_value=720, default=72)


class AnnouncementSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=ANNOUNCEMENT_KINDS)
    audience = serializers.ChoiceField(choices=ANNOUNCEMENT_AUDIENCES)
    title = serializers.DictField(child=serializers.CharField(), help_text="text per language")
    message = serializers.DictField(child=serializers.CharField(), help_text="text per language")
    createdAt = serializers.DateTimeField()
    expiresAt = serializers.DateTimeField(allow_null=True)
    createdBy = serializers.UUIDField(allow_null=True)
    delivery = serializers.DictField(help_text="the delivery summary (events/announcements.py)")


class AnnouncementResponseSerializer(serializers.Serializer):
    announcement = AnnouncementSerializer()


def announcement_json(announcement: Announcement) -> dict:
    return {
        "id": str(announcement.pk),
        "type": announcement.kind,
        "audience": announcement.audience,
        "title": announcement.title,
        "message": announcement.message,
        "createdAt": announcement.created_at,
        "expiresAt": announcement.expires_at,
        "createdBy": str(announcement.created_by_id) if announcement.created_by_id else None,
        "delivery": announcement_delivery(announcement),
    }


class AnnouncementsView(TenantAPIView):
    @extend_schema(
        request=AnnouncementRequestSerializer,
        responses={201: AnnouncementResponseSerializer},
        summary="Send a school-wide announcement (admins)",
    )
    def post(self, request):
        if request.user.role != Role.ADMIN:
            raise Forbidden("forbidden", "Only a school's admins send announcements.")
        body = AnnouncementRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        announcement = announcement_create(
            sender=request.user,
            kind=data["type"],
            audience=data["audience"],
            title=data["title"],
            message=data["message"],
            expires_in=timedelta(hours=data["expiresInHours"]),
        )
        return created({"announcement": announcement_json(announcement)})


class AnnouncementView(TenantAPIView):
    @extend_schema(
        responses={200: AnnouncementResponseSerializer, **errors(404)},
        summary="An announcement and its delivery summary (admins)",
    )
    def get(self, request, announcement_id):
        if request.user.role != Role.ADMIN:
            raise Forbidden("forbidden", "Only a school's admins read announcements.")
        announcement = Announcement.objects.filter(pk=announcement_id).first()
        if announcement is None:
            raise NotFound("announcement_not_found", "No such announcement.")
        return Response({"announcement": announcement_json(announcement)})
