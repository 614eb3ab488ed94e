from django.apps import AppConfig


class SyncQueueConfig(AppConfig):
    name = "syncqueue"
