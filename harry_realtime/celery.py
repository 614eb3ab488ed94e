import logging
import os
import time

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")

app = Celery("harry_realtime")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_job_log = logging.getLogger("harry.job")
_started: dict[str, float] = {}


@task_prerun.connect
def _job_started(task_id=None, task=None, **kwargs) -> None:
    _started[task_id] = time.perf_counter()


@task_postrun.connect
def _job_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    """One JSON log line per job (harry_realtime/logs.py); arguments are not logged."""
    seconds = time.perf_counter() - _started.pop(task_id, time.perf_counter())
    _job_log.info(
        "job %s %s",
        task.name,
        state,
        extra={
            "event": "job",
            "task": task.name,
            "job_id": task_id,
            "state": state,
            "duration_ms": round(seconds * 1000, 2),
        },
    )
