from django.urls import path

from .broadcast import RealtimeBroadcastView, RealtimeTopicEventView

# supabase-js derives these from the socket endpoint `<host>/realtime/v1`.
urlpatterns: list = [
    path("api/broadcast", RealtimeBroadcastView.as_view(), name="realtime-v1-broadcast"),
    path(
        "api/broadcast/<str:topic>/events/<str:event>", RealtimeTopicEventView.as_view(), name="realtime-v1-http-send"
    ),
]
