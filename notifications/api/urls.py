from django.urls import path

from . import views

urlpatterns = [
    path("devices", views.DeviceListView.as_view(), name="push-devices"),
    path("devices/<uuid:device_id>", views.DeviceDetailView.as_view(), name="push-device"),
    path("send", views.NotificationSendView.as_view(), name="push-send"),
    path("teacher-messages", views.TeacherMessageView.as_view(), name="push-teacher-messages"),
    path("<uuid:notification_id>/opened", views.NotificationOpenedView.as_view(), name="push-opened"),
    path("<uuid:notification_id>/action", views.NotificationActionView.as_view(), name="push-action"),
]
