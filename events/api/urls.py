from django.urls import path

from .announcements import AnnouncementsView, AnnouncementView
from .broadcast import BroadcastEventView
from .poll import PollView

urlpatterns = [
    path("poll", PollView.as_view(), name="realtime-poll"),
    path("broadcast", BroadcastEventView.as_view(), name="realtime-broadcast"),
    path("announcements", AnnouncementsView.as_view(), name="realtime-announcements"),
    path("announcements/<uuid:announcement_id>", AnnouncementView.as_view(), name="realtime-announcement"),
]
