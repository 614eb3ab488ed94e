from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.response import Response

from harry_realtime.api import TenantAPIView, created
from harry_realtime.openapi import errors
from notifications import devices, selectors, services

from .serializers import (
    ActionSerializer,
    DeviceListSerializer,
    DeviceRegisterSerializer,
    DeviceSerializer,
    NotificationSerializer,
    SendSerializer,
    TeacherMessageSerializer,
)


class DeviceListView(TenantAPIView):
    @extend_schema(responses={200: DeviceListSerializer})
    def get(self, request):
        return Response({"devices": DeviceSerializer(selectors.device_tokens_of(user=request.user), many=True).data})

    @extend_schema(
        request=DeviceRegisterSerializer, responses={201: DeviceSerializer, 200: DeviceSerializer, **errors(409)}
    )
    def post(self, request):
        body = DeviceRegisterSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        device, was_created = devices.device_token_register(tenant=self.tenant, **body.validated_data)
        data = DeviceSerializer(device).data
        return created(data) if was_created else Response(data)


class DeviceDetailView(TenantAPIView):
    @extend_schema(responses={204: None, **errors(404)})
    def delete(self, request, device_id):
        devices.device_token_deactivate(device_id=device_id, reason="deleted_by_user")
        return Response(status=status.HTTP_204_NO_CONTENT)


class NotificationSendView(TenantAPIView):
    @extend_schema(request=SendSerializer, responses={201: NotificationSerializer(many=True)})
    def post(self, request):
        body = SendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rows = services.push_notification_send(sender=request.user, **body.validated_data)
        return created(NotificationSerializer(rows, many=True).data)


class TeacherMessageView(TenantAPIView):
    @extend_schema(request=TeacherMessageSerializer, responses={201: NotificationSerializer(many=True), **errors(404)})
    def post(self, request):
        body = TeacherMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        rows = services.push_notification_create_teacher_message(sender=request.user, **body.validated_data)
        return created(NotificationSerializer(rows, many=True).data)


class NotificationOpenedView(TenantAPIView):
    @extend_schema(request=None, responses={200: NotificationSerializer, **errors(404)})
    def post(self, request, notification_id):
        row = services.push_notification_mark_opened(notification_id=notification_id, user=request.user)
        return Response(NotificationSerializer(row).data)


class NotificationActionView(TenantAPIView):
    @extend_schema(request=ActionSerializer, responses={200: NotificationSerializer, **errors(404)})
    def post(self, request, notification_id):
        body = ActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = services.push_notification_record_action(
            notification_id=notification_id, user=request.user, action=body.validated_data["action"]
        )
        return Response(NotificationSerializer(row).data)
