"""The spec's ranking columns are maintained by the database, whoever writes the row (API, sync,
admin, raw SQL): `position_change_delta` (positions gained; negative when lost) and
`last_position_change` when the rank changes, `celebration_triggered` when rank, level or points
change (rank up, level up, or 100 points or more at once: the capture trigger's rule)."""

from django.db import migrations

FORWARD = """
CREATE OR REPLACE FUNCTION student_rankings_track_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.current_rank IS DISTINCT FROM OLD.current_rank THEN
        NEW.position_change_delta := coalesce(OLD.current_rank - NEW.current_rank, 0);
        NEW.last_position_change := now();
    END IF;
    IF NEW.current_rank IS DISTINCT FROM OLD.current_rank OR NEW.current_level IS DISTINCT FROM OLD.current_level
       OR NEW.total_points IS DISTINCT FROM OLD.total_points THEN
        NEW.celebration_triggered := coalesce(NEW.current_rank < OLD.current_rank, false)
            OR coalesce(NEW.current_level > OLD.current_level, false)
            OR coalesce(NEW.total_points - OLD.total_points >= 100, false);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER student_rankings_track_change BEFORE UPDATE ON student_rankings
    FOR EACH ROW EXECUTE FUNCTION student_rankings_track_change();
"""
BACKWARD = """
DROP TRIGGER IF EXISTS student_rankings_track_change ON student_rankings;
DROP FUNCTION IF EXISTS student_rankings_track_change();
"""


class Migration(migrations.Migration):
    dependencies = [("school", "0004_family_engagement_preferences_default")]
    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
