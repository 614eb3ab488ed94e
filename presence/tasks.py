"""Celery beat jobs for presence and connections."""

import logging

from asgiref.sync import async_to_sync
from celery import shared_task

from . import expiry

log = logging.getLogger(__name__)


@shared_task(name="presence.tasks.expire_presence")
def expire_presence() -> dict:
    """Disconnect silent connections, take expired presences offline, drop day-old subscriptions."""
    result = expiry.presence_expire()
    dropped = async_to_sync(expiry.socket_presences_drop)(result.sockets) if result.sockets else 0
    if result.connections_disconnected or result.presences_offline or result.subscriptions_expired:
        log.info(
            "presence expiry: %s connections disconnected, %s presences offline (%s socket presences left"
            " their topics), %s subscriptions expired",
            result.connections_disconnected,
            len(result.presences_offline),
            dropped,
            result.subscriptions_expired,
        )
    return {
        "connections_disconnected": result.connections_disconnected,
        "presences_offline": len(result.presences_offline),
        "socket_presences_dropped": dropped,
        "subscriptions_expired": result.subscriptions_expired,
    }
