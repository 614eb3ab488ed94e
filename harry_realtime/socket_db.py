"""The database threads of a web process's sockets.

Channels' `database_sync_to_async` runs every call of a process on one thread (thread-sensitive
mode), so each socket's joins, replay pages and presence writes queued behind every other
socket's: 24 sockets rejoining after a web restart were answered one after the other, 50 to 60 ms
apart, mostly waiting for commits; on a slower machine the last joins passed realtime-js's join
timeout and rejoined with its backoff (17.6 s until all were back).

Socket work never holds a transaction or a connection from one call to the next (each call runs
its own `tenant_context` transaction, and the connection goes back to the pool after it), so it
can run on any thread. On a few threads, the calls of different sockets overlap and their commits
share PostgreSQL's WAL flushes. The calls of one socket still run one after the other: the socket
awaits each before its next.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=settings.REALTIME_DB_THREADS, thread_name_prefix="socket-db")
        return _executor


class _SocketDatabaseCall(DatabaseSyncToAsync):
    """`database_sync_to_async` (old connections closed before and after) on the sockets' threads."""

    def __init__(self, func: Callable[..., Any]):
        super().__init__(func, thread_sensitive=False)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._executor = _threads()
        return await super().__call__(*args, **kwargs)

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            # Every connection of the thread goes back (to the pool), not only the obsolete ones:
            # one kept here would still be used after PostgreSQL ended its backend.
            connections.close_all()


def socket_db(func: Callable[..., Any]) -> Callable[..., Any]:
    """An async version of `func` that runs on the sockets' database threads."""
    return _SocketDatabaseCall(func)


def shutdown() -> None:
    """Wait for the calls in flight and let the threads go (the next call starts new ones)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=True)
