from django.urls import path

from .broadcast import BroadcastEventView
from .poll import PollView

urlpatterns = [
    path("poll", PollView.as_view(), name="realtime-poll"),
    path("broadcast", BroadcastEventView.as_view(), name="realtime-broadcast"),
]
