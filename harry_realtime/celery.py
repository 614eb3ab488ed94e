import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")

app = Celery("harry_realtime")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
