"""Change capture: every write to a realtime-enabled table stores its realtime_events row in the
same transaction and NOTIFYs the listener (docs/design.md, decision 1).

Differences from the spec's trigger functions ("Database Triggers and Real-time Policies"), on purpose:
- No SECURITY DEFINER. The tables FORCE row-level security, so a definer function owned by the
  schema owner would fail in the platform context (the owner has no policy) and, owned by a
  superuser, would ignore tenancy. As invoker, the event insert passes the same policies as the
  row that caused it.
- `target_user_id` is the student's *user* id; the spec stored the student id there (an FK to
  users that fails) and looked up realtime_presence by student id for the same reason.
- Group-scoped events (attendance, enrollments, groups, students) have no target user: the spec
  targeted the student, which made an attendance event invisible to the group's teachers.
- The spec fired ranking events only when rank or level changed, although its own celebration
  rule includes "100 points or more"; here a change of rank, level or points is a domain event.
- `FOR i IN 1..array_length(group_teachers, 1)` raised for a group without teachers (NULL bound)
  and rolled back the attendance write; teacher topics here come from an aggregate that may be empty.
- Ages use the organization's time zone and current date, not the hard-coded Asia/Tashkent
  clock, and an age outside 10-18 maps to the nearest band instead of the spec's '13-15'.
- DELETE is captured too (NEW is NULL there; the spec's functions dereferenced it).
- The month-4 "ramadan_mode" and hour-based prayer guess are left to the Python side (culture app).

Each event carries, in `event_metadata`, what postgres_changes delivery and FERPA filtering need
without another query: `topics`, `change` (schema, table, type, commit_timestamp, record,
old_record) and `audience` (the student, their user, family and educator user ids).

Sequence order vs commit order: `seq` is taken when the row is inserted, but transactions commit
in any order. The BEFORE INSERT trigger takes, once per transaction, a shared transaction-level
advisory lock keyed by the sequence value *before* its allocation; `realtime_stable_seq()` returns
the highest seq below which no transaction can still commit an event, which the poll cursor uses.
"""

from django.db import migrations

LOCK_NAMESPACE = 1 << 62

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION realtime_events_assign_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    floor_seq bigint;
BEGIN
    -- Lock first, then allocate: a reader that sees no lock with a bound below S knows every
    -- transaction that may still commit an event holds a seq above S.
    IF current_setting('realtime.inflight_lock', true) IS DISTINCT FROM 'on' THEN
        floor_seq := coalesce(pg_sequence_last_value('realtime_events_seq'), 0);
        PERFORM pg_advisory_xact_lock_shared(__NS__ + floor_seq);
        PERFORM set_config('realtime.inflight_lock', 'on', true);
    END IF;
    NEW.seq := nextval('realtime_events_seq');
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION realtime_stable_seq() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    allocated bigint;
    inflight bigint;
BEGIN
    -- Order matters: the allocation high-water mark is read before the locks.
    allocated := coalesce(pg_sequence_last_value('realtime_events_seq'), 0);
    SELECT min(((l.classid::bigint << 32) | l.objid::bigint) - __NS__) INTO inflight
      FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       AND ((l.classid::bigint << 32) | l.objid::bigint) >= __NS__
       AND l.pid <> pg_backend_pid();
    RETURN least(allocated, coalesce(inflight, allocated));
END $$;

CREATE OR REPLACE FUNCTION realtime_age_group(dob date, today date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN dob IS NULL THEN NULL
        WHEN extract(year FROM age(today, dob)) <= 12 THEN '10-12'
        WHEN extract(year FROM age(today, dob)) <= 15 THEN '13-15'
        ELSE '16-18'
    END
$$;

CREATE OR REPLACE FUNCTION realtime_celebration_style(dob date, today date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN dob IS NULL THEN 'standard_notification'
        WHEN extract(year FROM age(today, dob)) BETWEEN 10 AND 12 THEN 'animated_celebration'
        WHEN extract(year FROM age(today, dob)) BETWEEN 13 AND 15 THEN 'achievement_badge'
        WHEN extract(year FROM age(today, dob)) BETWEEN 16 AND 18 THEN 'professional_recognition'
        ELSE 'standard_notification'
    END
$$;

-- Who sees a student's data in full under FERPA: their own user, family, and educators
-- (users of teachers assigned to one of the student's active groups).
CREATE OR REPLACE FUNCTION realtime_student_audience(p_student uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'student_id', s.id,
        'student_user_id', s.user_id,
        'family_user_ids', coalesce((
            SELECT jsonb_agg(DISTINCT r.user_a_id) FROM user_relationships r
             WHERE r.user_b_id = s.user_id AND r.is_active
               AND r.relationship_type IN ('parent', 'guardian', 'family')), '[]'::jsonb),
        'educator_user_ids', coalesce((
            SELECT jsonb_agg(DISTINCT t.user_id)
              FROM student_group_enrollments e
              JOIN teacher_group_assignments a ON a.group_id = e.group_id
                   AND a.is_active AND a.deleted_at IS NULL
              JOIN teachers t ON t.id = a.teacher_id AND t.is_active AND t.deleted_at IS NULL
             WHERE e.student_id = s.id AND e.status = 'active' AND t.user_id IS NOT NULL), '[]'::jsonb))
      FROM students s WHERE s.id = p_student
$$;

CREATE OR REPLACE FUNCTION realtime_group_teacher_topics(p_org uuid, p_group uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(DISTINCT 'groups:org_' || p_org || ':teacher_' || a.teacher_id), '[]'::jsonb)
      FROM teacher_group_assignments a
     WHERE a.group_id = p_group AND a.is_active AND a.deleted_at IS NULL
$$;

CREATE OR REPLACE FUNCTION realtime_capture() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rec jsonb := CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
    old_rec jsonb := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END;
    org uuid := (rec->>'organization_id')::uuid;
    today date;
    student_row students%ROWTYPE;
    audience jsonb := '{}'::jsonb;
    topics jsonb := '[]'::jsonb;
    payload jsonb := '{}'::jsonb;
    ev_type text;
    ev_category text;
    ev_priority text := 'medium';
    scope text := 'individual';
    target_user uuid;
    target_type text;
    target_group uuid;
    domain_event boolean := true;
    stamp double precision := extract(epoch FROM clock_timestamp()) * 1000;
BEGIN
    SELECT (now() AT TIME ZONE coalesce(o.timezone, 'UTC'))::date INTO today FROM organizations o WHERE o.id = org;
    today := coalesce(today, current_date);
    IF rec ? 'student_id' THEN
        SELECT * INTO student_row FROM students WHERE id = (rec->>'student_id')::uuid;
        audience := coalesce(realtime_student_audience(student_row.id), '{}'::jsonb);
    ELSIF TG_TABLE_NAME = 'students' THEN
        student_row := jsonb_populate_record(NULL::students, rec);
        audience := coalesce(realtime_student_audience(student_row.id), '{}'::jsonb);
    END IF;

    IF TG_TABLE_NAME = 'student_rankings' THEN
        ev_type := 'student_ranking_update';
        ev_category := 'gamification';
        target_user := student_row.user_id;
        target_type := 'student';
        topics := jsonb_build_array('rankings:org_' || org || ':student_' || student_row.id);
        DECLARE
            old_rank int := (old_rec->>'current_rank')::int;
            new_rank int := (rec->>'current_rank')::int;
            old_level int := (old_rec->>'current_level')::int;
            new_level int := (rec->>'current_level')::int;
            points_change int := (rec->>'total_points')::int - coalesce((old_rec->>'total_points')::int, 0);
            celebrate boolean := false;
            age_grp text := realtime_age_group(student_row.date_of_birth, today);
        BEGIN
            IF TG_OP = 'UPDATE' THEN
                domain_event := old_rank IS DISTINCT FROM new_rank OR old_level IS DISTINCT FROM new_level
                                OR points_change <> 0;
                celebrate := new_rank < old_rank OR new_level > old_level OR points_change >= 100;
            ELSE
                domain_event := TG_OP = 'INSERT';
            END IF;
            ev_priority := CASE WHEN celebrate THEN 'high' ELSE 'medium' END;
            payload := jsonb_build_object(
                'student_id', student_row.id, 'organization_id', org,
                'old_rank', old_rank, 'new_rank', new_rank,
                'old_level', old_level, 'new_level', new_level,
                'points_change', points_change, 'total_points', (rec->>'total_points')::int,
                'celebration_triggered', celebrate, 'age_group', age_grp,
                'family_notification_required', age_grp = '10-12',
                'timestamp', stamp);
        END;
    ELSIF TG_TABLE_NAME = 'attendance' THEN
        ev_type := 'attendance_sync';
        ev_category := 'educational';
        scope := 'group';
        target_group := (rec->>'group_id')::uuid;
        ev_priority := CASE WHEN (rec->>'marked_offline')::boolean THEN 'high' ELSE 'medium' END;
        topics := jsonb_build_array('attendance:org_' || org || ':group_' || target_group)
                  || realtime_group_teacher_topics(org, target_group);
        payload := jsonb_build_object(
            'attendance_id', rec->'id', 'student_id', rec->'student_id', 'group_id', rec->'group_id',
            'teacher_id', rec->'teacher_id', 'organization_id', org, 'status', rec->'status',
            'attendance_date', rec->'attendance_date', 'marked_offline', rec->'marked_offline',
            'sync_status', rec->'sync_status', 'sync_priority', rec->'sync_priority',
            'sync_version', rec->'sync_version', 'marking_method', rec->'marking_method',
            'offline_timestamp', rec->'offline_timestamp', 'prayer_time_context', rec->'prayer_time_context',
            'updated_at', rec->'updated_at', 'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'student_achievements' THEN
        ev_type := 'achievement_earned';
        ev_category := 'gamification';
        ev_priority := 'high';
        target_user := student_row.user_id;
        target_type := 'student';
        domain_event := TG_OP = 'INSERT';
        topics := jsonb_build_array('rankings:org_' || org || ':student_' || student_row.id);
        payload := jsonb_build_object(
            'achievement_id', rec->'achievement_id', 'student_id', student_row.id, 'organization_id', org,
            'coins_awarded', rec->'coins_awarded', 'bonus_points', rec->'bonus_points_awarded',
            'celebration_style', realtime_celebration_style(student_row.date_of_birth, today),
            'age_group', realtime_age_group(student_row.date_of_birth, today),
            'family_notification', extract(year FROM age(today, student_row.date_of_birth)) < 16,
            'timestamp', stamp)
            || coalesce((SELECT jsonb_build_object(
                    'name', a.name, 'description', a.description, 'category', a.category,
                    'rarity', a.rarity, 'points_reward', a.points_reward)
                FROM achievements a WHERE a.id = (rec->>'achievement_id')::uuid), '{}'::jsonb);
    ELSIF TG_TABLE_NAME = 'home_tasks' THEN
        ev_type := 'task_assignment';
        ev_category := 'educational';
        target_user := student_row.user_id;
        target_type := 'student';
        topics := jsonb_build_array('tasks:org_' || org || ':student_' || student_row.id);
        payload := jsonb_build_object(
            'task_id', rec->'id', 'student_id', student_row.id, 'teacher_id', rec->'teacher_id',
            'group_id', rec->'group_id', 'organization_id', org, 'title', rec->'title',
            'task_type', rec->'task_type', 'difficulty', rec->'difficulty',
            'estimated_minutes', rec->'estimated_minutes', 'ai_generated', rec->'ai_generated',
            'due_date', rec->'due_date', 'grading_status', rec->'grading_status',
            'age_group', realtime_age_group(student_row.date_of_birth, today),
            'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'feedback_entries' THEN
        ev_type := 'teacher_communication';
        ev_category := 'communication';
        target_user := student_row.user_id;
        target_type := 'student';
        topics := jsonb_build_array('tasks:org_' || org || ':student_' || student_row.id);
        payload := jsonb_build_object(
            'feedback_id', rec->'id', 'student_id', student_row.id, 'teacher_id', rec->'teacher_id',
            'group_id', rec->'group_id', 'organization_id', org, 'feedback_type', rec->'feedback_type',
            'rating', rec->'rating', 'visible_to_family', rec->'visible_to_family',
            'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'students' THEN
        ev_type := 'notification_broadcast';
        ev_category := 'administrative';
        scope := 'group';
        SELECT coalesce(jsonb_agg(DISTINCT x.topic), '[]'::jsonb) INTO topics
          FROM student_group_enrollments e,
               LATERAL jsonb_array_elements_text(realtime_group_teacher_topics(org, e.group_id)) AS x(topic)
         WHERE e.student_id = student_row.id AND e.status = 'active';
        domain_event := TG_OP <> 'UPDATE' OR old_rec->'status' IS DISTINCT FROM rec->'status';
        payload := jsonb_build_object(
            'student_id', student_row.id, 'organization_id', org, 'full_name', rec->'full_name',
            'old_status', old_rec->'status', 'status', rec->'status', 'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'groups' THEN
        ev_type := 'notification_broadcast';
        ev_category := 'administrative';
        scope := 'group';
        target_group := (rec->>'id')::uuid;
        topics := realtime_group_teacher_topics(org, target_group);
        payload := jsonb_build_object(
            'group_id', rec->'id', 'organization_id', org, 'name', rec->'name', 'is_active', rec->'is_active',
            'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'student_group_enrollments' THEN
        ev_type := 'notification_broadcast';
        ev_category := 'administrative';
        scope := 'group';
        target_group := (rec->>'group_id')::uuid;
        topics := realtime_group_teacher_topics(org, target_group);
        payload := jsonb_build_object(
            'enrollment_id', rec->'id', 'student_id', rec->'student_id', 'group_id', rec->'group_id',
            'organization_id', org, 'old_status', old_rec->'status', 'status', rec->'status',
            'operation', TG_OP, 'timestamp', stamp);
    ELSIF TG_TABLE_NAME = 'push_notifications' THEN
        ev_type := 'notification_broadcast';
        ev_category := 'communication';
        target_user := (rec->>'target_user_id')::uuid;
        SELECT u.role INTO target_type FROM users u WHERE u.id = target_user;
        ev_priority := CASE rec->>'priority' WHEN 'urgent' THEN 'critical' WHEN 'high' THEN 'high'
                                             WHEN 'low' THEN 'low' ELSE 'medium' END;
        topics := jsonb_build_array('notifications:org_' || org || ':role_' || coalesce(target_type, 'all'));
        audience := jsonb_build_object('target_user_id', target_user);
        domain_event := false;
        payload := jsonb_build_object(
            'notification_id', rec->'id', 'notification_type', rec->'notification_type',
            'target_user_id', target_user, 'organization_id', org, 'priority', rec->'priority',
            'delivery_status', rec->'delivery_status', 'operation', TG_OP, 'timestamp', stamp);
    ELSE
        RAISE EXCEPTION 'realtime_capture is not configured for table %', TG_TABLE_NAME;
    END IF;

    INSERT INTO realtime_events (
        id, organization_id, event_type, event_category, priority, event_payload, event_metadata,
        source_table, source_record_id, target_user_id, target_user_type, target_group_id,
        broadcast_scope, expires_at, created_at, updated_at)
    VALUES (
        gen_random_uuid(), org, ev_type, ev_category, ev_priority, payload,
        jsonb_build_object(
            'topics', topics,
            'domain_event', domain_event,
            'audience', audience,
            'change', jsonb_build_object(
                'schema', TG_TABLE_SCHEMA, 'table', TG_TABLE_NAME, 'type', TG_OP,
                'commit_timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                'record', CASE WHEN TG_OP = 'DELETE' THEN '{}'::jsonb ELSE rec END,
                'old_record', coalesce(old_rec, '{}'::jsonb))),
        TG_TABLE_NAME, (rec->>'id')::uuid, target_user, target_type, target_group,
        scope, now() + interval '7 days', now(), now());
    RETURN NULL;
END $$;

-- Every stored event wakes the listener, whoever stored it (trigger, service, admin, raw SQL).
CREATE OR REPLACE FUNCTION realtime_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('realtime_events', NEW.seq::text);
    RETURN NULL;
END $$;
""".replace("__NS__", str(LOCK_NAMESPACE))

DROP_FUNCTIONS = """
DROP FUNCTION IF EXISTS realtime_events_notify();
DROP FUNCTION IF EXISTS realtime_capture();
DROP FUNCTION IF EXISTS realtime_group_teacher_topics(uuid, uuid);
DROP FUNCTION IF EXISTS realtime_student_audience(uuid);
DROP FUNCTION IF EXISTS realtime_celebration_style(date, date);
DROP FUNCTION IF EXISTS realtime_age_group(date, date);
DROP FUNCTION IF EXISTS realtime_stable_seq();
DROP FUNCTION IF EXISTS realtime_events_assign_seq();
"""

CAPTURED_TABLES = [
    "attendance",
    "student_rankings",
    "student_achievements",
    "home_tasks",
    "feedback_entries",
    "students",
    "groups",
    "student_group_enrollments",
    "push_notifications",
]


def capture_trigger(table: str) -> migrations.RunSQL:
    return migrations.RunSQL(
        f"CREATE TRIGGER {table}_realtime_capture AFTER INSERT OR UPDATE OR DELETE ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION realtime_capture();",
        f"DROP TRIGGER IF EXISTS {table}_realtime_capture ON {table};",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("events", "0003_row_level_security"),
        ("school", "0002_row_level_security"),
        ("notifications", "0003_row_level_security"),
    ]
    operations = [
        migrations.RunSQL(FUNCTIONS, DROP_FUNCTIONS),
        migrations.RunSQL(
            "CREATE TRIGGER realtime_events_seq_assign BEFORE INSERT ON realtime_events"
            " FOR EACH ROW EXECUTE FUNCTION realtime_events_assign_seq();"
            " CREATE TRIGGER realtime_events_notify AFTER INSERT ON realtime_events"
            " FOR EACH ROW EXECUTE FUNCTION realtime_events_notify();",
            "DROP TRIGGER IF EXISTS realtime_events_notify ON realtime_events;"
            " DROP TRIGGER IF EXISTS realtime_events_seq_assign ON realtime_events;",
        ),
        # The listener's work queue (events not yet fanned out) and replay by topic.
        migrations.RunSQL(
            "CREATE INDEX idx_realtime_events_unprocessed ON realtime_events (seq)"
            " WHERE processed_at IS NULL AND deleted_at IS NULL;"
            " CREATE INDEX idx_realtime_events_topics ON realtime_events USING GIN ((event_metadata -> 'topics'));",
            "DROP INDEX IF EXISTS idx_realtime_events_topics; DROP INDEX IF EXISTS idx_realtime_events_unprocessed;",
        ),
        *[capture_trigger(t) for t in CAPTURED_TABLES],
    ]
