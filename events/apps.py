from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "events"

    def ready(self) -> None:
        # The Announcements page lives in its own module (events/admin_announcements.py).
        from django.contrib import admin

        from events.admin_announcements import register

        register(admin.site)
