"""A deleted push is not news: the retention job deletes old pushes in batches, and the capture
trigger would turn each deletion into a realtime event (harry_realtime/retention.py)."""

from django.db import migrations

FORWARD = """
DROP TRIGGER IF EXISTS push_notifications_realtime_capture ON push_notifications;
CREATE TRIGGER push_notifications_realtime_capture AFTER INSERT OR UPDATE ON push_notifications
    FOR EACH ROW EXECUTE FUNCTION realtime_capture();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS push_notifications_realtime_capture ON push_notifications;
CREATE TRIGGER push_notifications_realtime_capture AFTER INSERT OR UPDATE OR DELETE ON push_notifications
    FOR EACH ROW EXECUTE FUNCTION realtime_capture();
"""


class Migration(migrations.Migration):
    dependencies = [("notifications", "0006_delivery_method_default"), ("events", "0004_change_capture")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
