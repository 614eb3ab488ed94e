"""Isolation (alice/bob/charlie style) over every table that carries organization_id."""

import uuid
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.db.utils import ProgrammingError

from harry_realtime.tenancy import Tenant, current_tenant, dangerously_platform_context, tenant_context

pytestmark = pytest.mark.django_db


def tenant_models():
    found = [
        m
        for m in apps.get_models()
        if any(f.column == "organization_id" for f in m._meta.concrete_fields) and m._meta.app_label != "auth"
    ]
    return sorted(found, key=lambda m: m._meta.db_table)


TENANT_MODELS = tenant_models()
ALL_TENANT_TABLES = sorted({m._meta.db_table for m in TENANT_MODELS} | {"organizations"})


def test_every_expected_table_is_covered():
    tables = {m._meta.db_table for m in TENANT_MODELS}
    assert {
        "users",
        "students",
        "teachers",
        "groups",
        "attendance",
        "student_rankings",
        "realtime_events",
        "realtime_subscriptions",
        "offline_sync_queue",
        "realtime_presence",
        "push_notifications",
    } <= tables


@pytest.mark.parametrize("table", ALL_TENANT_TABLES)
def test_rls_enabled_and_forced(table):
    with connection.cursor() as cursor:
        cursor.execute("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = %s", [table])
        assert cursor.fetchone() == (True, True)
        cursor.execute("SELECT count(*) FROM pg_policies WHERE tablename = %s", [table])
        assert cursor.fetchone()[0] >= 2


def test_app_role_is_neither_superuser_nor_bypassrls():
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False)


def _populate_realtime_rows(school):
    """One row of each realtime table for a school, written as the platform."""
    from events.models import RealtimeEvent, RealtimeSubscription
    from notifications.models import PushNotification
    from presence.models import RealtimePresence
    from syncqueue.models import OfflineSyncOperation

    org, user = school.org, school.student_user
    RealtimeEvent.objects.create(
        organization=org,
        event_type="system_announcement",
        event_category="system",
        event_payload={"x": 1},
        broadcast_scope="organization",
    )
    RealtimeSubscription.objects.create(
        organization=org,
        user=user,
        user_type="student",
        device_id="d1",
        session_id="s1",
        subscription_type="dashboard",
        channel_name="c",
    )
    RealtimePresence.objects.create(organization=org, user=user, user_type="student", user_name="S", device_id="d1")
    OfflineSyncOperation.objects.create(
        organization=org,
        user=user,
        device_id="d1",
        operation_id=str(uuid.uuid4()),
        operation_type="INSERT",
        table_name="home_tasks",
        local_timestamp="2026-01-01T00:00:00Z",
    )
    push = PushNotification.objects.create(
        organization=org, notification_type="system_alert", target_user=user, title_en="t", body_en="b"
    )
    _populate_feature_rows(school, push)


def _populate_feature_rows(school, push):
    """Rows of the tables the feature apps added, so every tenant table is really exercised."""
    from django.utils import timezone

    from culture.models import PrayerCalculationSettings, PrayerReminder
    from notifications.models import DeviceToken, PushDelivery

    org, user = school.org, school.student_user
    device = DeviceToken.objects.create(organization=org, user=user, platform="android", token=f"tok-{uuid.uuid4()}")
    PushDelivery.objects.create(organization=org, notification=push, device=device)
    PrayerCalculationSettings.objects.create(organization=org)
    PrayerReminder.objects.create(
        organization=org, user=user, prayer="asr", prayer_date=timezone.localdate(), prayer_at=timezone.now()
    )
    from events.models import Announcement
    from harry_realtime.models import RefreshToken

    Announcement.objects.create(
        organization=org, kind="system_announcement", audience="all", title={"en": "t"}, message={"en": "m"},
        expires_at=timezone.now() + timedelta(days=1), created_by=school.admin_user,
    )  # fmt: skip

    # A user sees only their own refresh tokens: one for the admin, whose view the tests take.
    for owner in (user, school.admin_user):
        RefreshToken.objects.create(
            organization=org, user=owner, family_id=uuid.uuid4(), expires_at=timezone.now() + timedelta(days=1)
        )


@pytest.fixture
def world(schools):
    with dangerously_platform_context():
        _populate_realtime_rows(schools.a)
        _populate_realtime_rows(schools.b)
    return schools


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.db_table)
def test_world_has_rows_of_both_schools(world, model):
    """Guards the tests below: a new tenant table must get rows in `world` to be checked."""
    with dangerously_platform_context():
        orgs = set(model.objects.values_list("organization_id", flat=True))
    assert orgs == {world.a.org.pk, world.b.org.pk}


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.db_table)
def test_no_context_sees_nothing(world, model):
    assert model.objects.count() == 0


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.db_table)
def test_org_context_never_sees_other_org(world, model):
    # As school A's admin: the widest ordinary view of school A.
    a_admin = world.a.admin_user
    with tenant_context(Tenant(a_admin.organization_id, a_admin.pk, "admin")):
        orgs = set(model.objects.values_list("organization_id", flat=True))
    assert orgs == {world.a.org.pk}
    with dangerously_platform_context():
        assert model.objects.filter(organization=world.b.org).exists()


@pytest.mark.parametrize("model", TENANT_MODELS, ids=lambda m: m._meta.db_table)
def test_insert_into_other_org_is_refused(world, model):
    with dangerously_platform_context():
        row = model.objects.filter(organization=world.b.org).first()
    a_admin = world.a.admin_user
    with tenant_context(Tenant(a_admin.organization_id, a_admin.pk, "admin")):
        clone = _clone_for_insert(row)
        with pytest.raises(ProgrammingError, match="row-level security"):
            with transaction.atomic():
                clone.save(force_insert=True)


def _clone_for_insert(row):
    row.pk = uuid.uuid4()
    for field in row._meta.concrete_fields:
        if field.unique and not field.primary_key and field.name != "seq":
            setattr(
                row,
                field.attname,
                f"x-{uuid.uuid4()}"
                if field.get_internal_type() in ("CharField", "SlugField", "TextField")
                else uuid.uuid4(),
            )
    if row._meta.db_table == "offline_sync_queue":
        row.operation_id = str(uuid.uuid4())
    if hasattr(row, "seq"):
        row.seq = None
    return row


def test_organizations_visible_only_in_own_context(world):
    from school.models import Organization

    assert Organization.objects.count() == 0
    a = world.a.admin_user
    with tenant_context(Tenant(a.organization_id, a.pk, "admin")):
        assert list(Organization.objects.values_list("pk", flat=True)) == [world.a.org.pk]


def test_user_rules_on_realtime_tables(world):
    """A student sees only their own sync queue and subscriptions; an admin sees the school's."""
    from events.models import RealtimeSubscription
    from syncqueue.models import OfflineSyncOperation

    other = world.a.other_student_user
    with tenant_context(Tenant(other.organization_id, other.pk, "student")):
        assert OfflineSyncOperation.objects.count() == 0
        assert RealtimeSubscription.objects.count() == 0
    owner = world.a.student_user
    with tenant_context(Tenant(owner.organization_id, owner.pk, "student")):
        assert OfflineSyncOperation.objects.count() == 1
    admin = world.a.admin_user
    with tenant_context(Tenant(admin.organization_id, admin.pk, "admin")):
        assert RealtimeSubscription.objects.count() == 1


def test_events_targeted_at_someone_else_are_hidden(world):
    from events.models import RealtimeEvent

    target, bystander = world.a.student_user, world.a.other_student_user
    with dangerously_platform_context():
        RealtimeEvent.objects.create(
            organization=world.a.org,
            event_type="achievement_earned",
            event_category="gamification",
            event_payload={"marker": "private"},
            target_user=target,
        )
    with tenant_context(Tenant(bystander.organization_id, bystander.pk, "student")):
        assert not RealtimeEvent.objects.filter(target_user=target).exists()
    with tenant_context(Tenant(target.organization_id, target.pk, "student")):
        assert RealtimeEvent.objects.filter(event_payload__marker="private").count() == 1


def test_nested_context_restores_outer(world):
    a, b = world.a.admin_user, world.b.admin_user
    with tenant_context(Tenant(a.organization_id, a.pk, "admin")):
        with tenant_context(Tenant(b.organization_id, b.pk, "admin")):
            assert current_tenant().organization_id == str(b.organization_id)
        assert current_tenant().organization_id == str(a.organization_id)
    assert current_tenant() is None


@pytest.mark.django_db(transaction=True)
def test_an_outermost_context_ends_with_its_transaction():
    # It neither reads nor restores the settings: the commit or rollback reverts them.
    assert not connection.in_atomic_block
    org = uuid.uuid4()
    with tenant_context(Tenant(org, uuid.uuid4(), "admin")):
        assert current_tenant().organization_id == str(org)
    assert current_tenant() is None
    with pytest.raises(RuntimeError), tenant_context(Tenant(org, uuid.uuid4(), "admin")):
        raise RuntimeError("the block fails")
    assert current_tenant() is None


def test_platform_context_restores_app_role(world):
    with dangerously_platform_context():
        pass
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user = session_user")
        assert cursor.fetchone()[0] is True


def _connection_role() -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user, session_user")
        return cursor.fetchone()


@pytest.mark.django_db(transaction=True)
def test_outermost_platform_context_ends_with_its_transaction():
    """Outside any transaction the context skips its explicit restore: the commit (or the
    rollback) that ends its own transaction must put the app role back."""
    assert not connection.in_atomic_block
    with dangerously_platform_context():
        assert _connection_role()[0] == "harry_platform"
    current, session = _connection_role()
    assert current == session != "harry_platform"
    with pytest.raises(RuntimeError):
        with dangerously_platform_context():
            raise RuntimeError("the block fails")
    current, session = _connection_role()
    assert current == session != "harry_platform"


def test_app_role_cannot_switch_rls_off():
    with pytest.raises(ProgrammingError):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("ALTER TABLE students DISABLE ROW LEVEL SECURITY")
