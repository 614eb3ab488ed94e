from django.urls import path

from . import views

urlpatterns = [
    path("connect", views.ConnectView.as_view(), name="realtime-connect"),
    path("disconnect", views.DisconnectView.as_view(), name="realtime-disconnect"),
    path("subscribe", views.SubscribeView.as_view(), name="realtime-subscribe"),
    path("subscribe/<uuid:subscription_id>", views.UnsubscribeView.as_view(), name="realtime-unsubscribe"),
    path("presence", views.PresenceView.as_view(), name="realtime-presence"),
    path("attendance/marking", views.MarkingView.as_view(), name="attendance-marking"),
    path("attendance/marking/<uuid:group_id>", views.MarkingFinishView.as_view(), name="attendance-marking-finish"),
    path("attendance/mark", views.MarkView.as_view(), name="attendance-mark"),
]
