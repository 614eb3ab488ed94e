"""Abstract bases shared by every tenant table."""

import uuid

from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


class UUIDModel(models.Model):
    # db_default too, so rows written by triggers and raw SQL get ids and timestamps.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID(), editable=False)

    class Meta:
        abstract = True


class TimestampedModel(UUIDModel):
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        abstract = True


class TenantModel(TimestampedModel):
    """A row that belongs to one school; row-level security keys on `organization_id`."""

    organization = models.ForeignKey("school.Organization", on_delete=models.CASCADE, related_name="+")

    class Meta:
        abstract = True


class SyncVersionedModel(TenantModel):
    """Optimistic locking for offline sync: a trigger bumps `sync_version` on every update."""

    sync_version = models.BigIntegerField(default=1, db_default=1, editable=False)

    class Meta:
        abstract = True
