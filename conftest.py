"""Shared fixtures: a real test database (owner migrates, app role serves) and two schools."""

import os
import time

import pytest
from django.conf import settings
from django.db import connections

from harry_realtime import socket_db
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context


@pytest.fixture(scope="session")
def django_db_setup(django_db_blocker):
    """Create and migrate the test database as the owner; tests then connect as the app role."""
    with django_db_blocker.unblock():
        owner = connections["owner"]
        original_name = owner.settings_dict["NAME"]
        test_name = owner.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        app = connections["default"]
        app.close()
        if hasattr(app, "close_pool"):
            app.close_pool()
        app.settings_dict["NAME"] = test_name
        with owner.cursor() as cursor:
            # Test-only: transactional tests empty the tables between tests as the app role.
            cursor.execute(f'GRANT TRUNCATE ON ALL TABLES IN SCHEMA public TO "{app.settings_dict["USER"]}"')
    yield
    # A socket's last database call (its teardown's write) may still run on the sockets' threads.
    socket_db.shutdown()
    with django_db_blocker.unblock():
        connections["default"].close()
        if hasattr(connections["default"], "close_pool"):
            connections["default"].close_pool()
        _others_gone(owner)
        owner.creation.destroy_test_db(original_name, verbosity=0)


def _others_gone(owner, timeout: float = 2.0) -> None:
    """No other session may use the test database when it is dropped. psycopg's pool closes a
    connection given back around its `close` (a reset on the pool's worker thread, a socket's last
    write on its database thread) only once that is done; what still lingers after `timeout` is
    ended with the administrator's connection (DATABASE_ADMIN_URL) when there is one."""
    deadline = time.monotonic() + timeout
    with owner.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        name = owner.settings_dict["NAME"]
    admin_url = os.environ.get("DATABASE_ADMIN_URL")
    if admin_url:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND usename = %s",
                [name, connections["default"].settings_dict["USER"]],
            )


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A new channel layer per test: channels_redis binds its receive locks to the event loop that
    first used them, and each test runs in its own loop; a receive cancelled at a test's end can
    leave such a lock held for the next test (a production process has one loop)."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def no_login_failures_carried_over():
    """Failed sign-ins are counted in Redis per client address (all test clients are 127.0.0.1):
    each test starts with none, as a production window would eventually."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = settings.CHANNEL_LAYERS["default"]["CONFIG"].get("prefix", "harry")
    keys = list(client.scan_iter(f"{prefix}:login_failures:*"))
    if keys:
        client.delete(*keys)
    client.close()
    yield


@pytest.fixture(autouse=True)
def no_prayer_hold(settings):
    """Socket deliveries would otherwise depend on the hour the suite runs at; the tests of the
    prayer hold turn it back on and give the moment explicitly."""
    settings.REALTIME_PRAYER_HOLD = False


def tenant_of(user) -> Tenant:
    return Tenant(organization_id=user.organization_id, user_id=user.pk, role=user.role)


@pytest.fixture
def as_user():
    """`with as_user(user): ...` runs ORM code the way a request of that user would."""
    return lambda user: tenant_context(tenant_of(user))


@pytest.fixture
def schools(db):
    """Two schools (a: Tashkent, b: Samarkand), each from `build_school`."""
    from school.tests.factories import build_school

    with dangerously_platform_context():
        return type("Schools", (), {"a": build_school("Alpha", "alpha"), "b": build_school("Bravo", "bravo")})


@pytest.fixture
def api():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def token_for():
    from harry_realtime.auth import issue_access_token

    return lambda user: issue_access_token(user)


@pytest.fixture
def client_for(token_for):
    from rest_framework.test import APIClient

    def make(user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client

    return make


@pytest.fixture
def staff_login(client):
    """`staff_login(user)`: make a school's user a school admin (staff in the school-admin group,
    as seed_demo does) and sign the Django test client in to the admin as them."""

    def login(user):
        from school.services import school_admin_grant

        with dangerously_platform_context():
            school_admin_grant(user=user)
        response = client.post(
            "/admin/login/", {"username": user.username, "password": "harry-demo", "next": "/admin/"}
        )
        assert response.status_code == 302, response.content[:500]
        return client

    return login


@pytest.fixture
def platform_login(client):
    """Sign the Django test client in as a platform superuser (no organization)."""

    def login():
        from school.models import User

        with dangerously_platform_context():
            User.objects.create_superuser("root@platform.test", "harry-demo")
        response = client.post("/admin/login/", {"username": "root@platform.test", "password": "harry-demo"})
        assert response.status_code == 302
        return client

    return login


def pytest_configure(config):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
async def worker_connections_closed():
    """Worker threads that ran ORM code (the consumer's, the listener's) keep their connections;
    close them so the test database can be dropped."""
    from channels.db import database_sync_to_async

    yield
    await database_sync_to_async(connections.close_all)()


@pytest.fixture
async def sockets():
    """`await sockets.joined(user, topic)` / `await sockets.open()`: closed at teardown, pass or fail."""
    from harry_realtime.testing import Sockets

    opened = Sockets()
    yield opened
    await opened.close_all()
