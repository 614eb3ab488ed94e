import pytest

from events.bindings import BindingError, parse_binding, parse_bindings


def test_bindings_echo_exactly_what_was_sent_plus_distinct_ids():
    raw = [
        {"event": "*", "schema": "public", "table": "attendance", "filter": "group_id=eq.g1"},
        {"event": "UPDATE", "schema": "public", "table": "student_rankings"},
        {"event": "*", "schema": "public"},
    ]
    bindings = parse_bindings(raw)
    echoed = [b.echo() for b in bindings]
    assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == raw
    assert len({e["id"] for e in echoed}) == 3
    assert parse_bindings(None) == [] and parse_bindings([]) == []


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"event": "*", "schema": "public", "table": "users"}, "not published"),
        ({"event": "*", "schema": "auth", "table": "attendance"}, "schema"),
        ({"event": "UPSERT", "schema": "public", "table": "attendance"}, "event"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "grp=eq.1"}, "no column"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status=ilike.x"}, "operator"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status"}, "column=operator.value"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status=eq."}, "no value"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status=in.present"}, "list"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": "status=in.(a,,b)"}, "empty"),
        ({"event": "*", "schema": "public", "filter": "status=eq.x"}, "needs a table"),
        ({"event": "*", "schema": "public", "table": "attendance", "filter": 5}, "string"),
        ("attendance", "object"),
    ],
)
def test_invalid_bindings_are_refused(raw, needle):
    with pytest.raises(BindingError, match=needle):
        parse_binding(raw)


def test_too_many_bindings_or_not_a_list():
    with pytest.raises(BindingError):
        parse_bindings({"event": "*"})
    with pytest.raises(BindingError):
        parse_bindings([{"event": "*", "schema": "public", "table": "attendance"}] * 21)


@pytest.mark.parametrize(
    ("text", "record", "expected"),
    [
        ("status=eq.present", {"status": "present"}, True),
        ("status=eq.present", {"status": "absent"}, False),
        ("status=neq.present", {"status": "absent"}, True),
        ("status=in.(late,absent)", {"status": "late"}, True),
        ("status=in.(late,absent)", {"status": "present"}, False),
        ("sync_priority=gt.5", {"sync_priority": 10}, True),
        ("sync_priority=gt.5", {"sync_priority": 5}, False),
        ("sync_priority=gte.5", {"sync_priority": "5"}, True),
        ("sync_priority=lt.5", {"sync_priority": 4}, True),
        ("sync_priority=lte.5", {"sync_priority": 6}, False),
        ("marked_offline=eq.true", {"marked_offline": True}, True),
        ("status=eq.present", {"status": None}, False),
        ("status=eq.present", {}, False),
    ],
)
def test_filters_match_records(text, record, expected):
    binding = parse_binding({"event": "*", "schema": "public", "table": "attendance", "filter": text})
    assert binding.matches(table="attendance", change_type="UPDATE", record=record) is expected


def test_event_and_table_must_match():
    binding = parse_binding({"event": "INSERT", "schema": "public", "table": "attendance"})
    assert binding.matches(table="attendance", change_type="INSERT", record={})
    assert not binding.matches(table="attendance", change_type="DELETE", record={})
    assert not binding.matches(table="home_tasks", change_type="INSERT", record={})
    every_table = parse_binding({"event": "*", "schema": "public"})
    assert every_table.matches(table="home_tasks", change_type="DELETE", record=None)


@pytest.mark.parametrize("table", ["achievements", "teacher_group_assignments", "realtime_events", "realtime_presence"])
def test_tables_without_change_capture_are_refused_with_the_reason(table):
    with pytest.raises(BindingError, match=f"'{table}' is not published for realtime: its changes are not captured"):
        parse_binding({"event": "*", "schema": "public", "table": table})


@pytest.mark.django_db
def test_every_bindable_table_has_a_capture_trigger():
    from django.db import connection

    from events.bindings import REALTIME_TABLES

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT event_object_table FROM information_schema.triggers"
            " WHERE action_statement LIKE '%%realtime_capture()%%'"
        )
        captured = {row[0] for row in cursor.fetchall()}
    assert set(REALTIME_TABLES) == captured
