"""One SAVEPOINT per operation without a round trip of its own (see `OperationSavepoints`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connections, transaction


class OperationSavepoints:
    """A savepoint per operation, without a round trip of its own.

    Installed as the connection's execute wrapper for a chunk. `SAVEPOINT` (and the previous
    operation's `RELEASE SAVEPOINT`) travel in front of the operation's first statement, in one
    simple-protocol query (psycopg's client-side binding cursor, Django's default). An operation
    refused before it touched the database never creates one. Only a rollback costs a round trip.
    """

    def __init__(self, using: str = "default"):
        self.using = using
        self.pending: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        if not self.pending:
            return execute(sql, params, many, context)
        prefix, self.pending = self.pending, []
        raw = context["cursor"].cursor
        if many or not isinstance(raw, psycopg.ClientCursor):
            for statement in prefix:
                raw.execute(statement)
            return execute(sql, params, many, context)
        result = execute("; ".join([*prefix, sql]), params, many, context)
        for _ in prefix:
            raw.nextset()  # the caller reads the result of its own statement, the last one
        return result

    def flush(self) -> None:
        if self.pending:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT 1")

    @contextmanager
    def operation(self) -> Iterator[None]:
        # One name for all: operations run one after another, each released before the next,
        # and constant statements keep psycopg's query cache useful.
        name = "sync_operation"
        start = f"SAVEPOINT {name}"
        self.pending.append(start)
        try:
            yield
        except BaseException:
            if start in self.pending:
                self.pending.remove(start)  # never sent: nothing to undo
            else:
                # As Django's own atomic() does: clear the flag its error handling may have set,
                # roll back to the savepoint, and flag the whole transaction if even that fails.
                transaction.set_rollback(False, using=self.using)
                try:
                    with connections[self.using].cursor() as cursor:
                        cursor.execute(f"ROLLBACK TO SAVEPOINT {name}")
                except BaseException:
                    transaction.set_rollback(True, using=self.using)
                    raise
                self.pending.append(f"RELEASE SAVEPOINT {name}")
            raise
        if start in self.pending:
            self.pending.remove(start)
        else:
            self.pending.append(f"RELEASE SAVEPOINT {name}")
