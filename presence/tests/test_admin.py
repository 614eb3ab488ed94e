"""Staff views of connections and presence: own school only, filterable."""

import pytest

from events.profiles import ConnectionProfile
from harry_realtime.tenancy import Tenant, tenant_context
from presence import services, sockets

pytestmark = pytest.mark.django_db


def _register(user, device):
    with tenant_context(Tenant(user.organization_id, user.pk, user.role)):
        connection = services.connection_register(
            user=user,
            device_id=device,
            platform="android",
            app_version="1.0",
            subscription_types=["attendance"],
            cultural_preferences={},
            profile=ConnectionProfile(performance_mode="standard"),
        )
        sockets.presence_tracked(user=user, device_id=device, meta={"activity": f"activity-of-{device}"})
    return connection


def test_staff_filter_connections_and_presence_of_their_school(client, staff_login, schools):
    a, b = schools.a, schools.b
    _register(a.teacher_user, "alpha-phone")
    _register(b.teacher_user, "bravo-phone")
    offline = _register(a.outsider_user, "outsider-phone")
    with tenant_context(Tenant(a.org.pk, a.outsider_user.pk, "teacher")):
        services.connection_close(
            user=a.outsider_user, connection_id=offline.connection_id, reason="user_logout", sync_pending_data=False
        )
    staff_login(a.admin_user)

    page = client.get("/admin/presence/realtimepresence/").content.decode()
    assert "alpha-phone" in page and "outsider-phone" in page and "bravo-phone" not in page
    online = client.get("/admin/presence/realtimepresence/?online=yes").content.decode()
    assert "alpha-phone" in online and "outsider-phone" not in online
    by_device = client.get("/admin/presence/realtimepresence/?q=alpha-phone").content.decode()
    assert "activity-of-alpha-phone" in by_device and "outsider-phone" not in by_device

    connections = client.get("/admin/events/realtimesubscription/").content.decode()
    assert "alpha-phone" in connections and "bravo-phone" not in connections
    live = client.get("/admin/events/realtimesubscription/?online=yes").content.decode()
    assert "alpha-phone" in live and "outsider-phone" not in live
    in_group = client.get(f"/admin/events/realtimesubscription/?group={a.group.pk}").content.decode()
    assert "alpha-phone" in in_group and "outsider-phone" not in in_group
    assert client.get("/admin/events/realtimesubscription/?connection_status=disconnected").status_code == 200
