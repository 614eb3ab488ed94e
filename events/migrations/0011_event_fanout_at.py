from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0010_connection_profile"),
    ]

    operations = [
        migrations.AddField(
            model_name="realtimeevent",
            name="fanout_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        # Events fanned out before this column existed stay replayable; failed ones never went out.
        migrations.RunSQL(
            "UPDATE realtime_events SET fanout_at = processed_at"
            " WHERE processed_at IS NOT NULL AND delivery_status <> 'failed'",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
