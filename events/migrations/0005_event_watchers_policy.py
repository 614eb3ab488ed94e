"""Family, educators and admins may read the events about a student they watch.

The foundation's policy shows an event to its target user; an event addressed to a student was
then invisible to the student's parents and teachers in poll and replay, although they receive it
live on the student's topics. The audience the capture trigger stored decides, so the policy needs
no join.
"""

from django.db import migrations

from harry_realtime import rls

WATCHERS = (
    "organization_id = app_org_id() AND (app_role() = 'admin'"
    " OR (event_metadata -> 'audience' -> 'family_user_ids') ? (app_user_id()::text)"
    " OR (event_metadata -> 'audience' -> 'educator_user_ids') ? (app_user_id()::text))"
)


class Migration(migrations.Migration):
    dependencies = [("events", "0004_change_capture")]
    operations = [rls.policy("realtime_events", "events_select_watchers", command="SELECT", using=WATCHERS)]
