"""Family notices: each engaged relative hears about absences, lateness, corrections, young
children's tasks and achievements and 10-12-year-olds' ranking milestones; every payload flag
that promises a family notice is true exactly when one was stored."""

import pytest

from events import domain
from events.family import family_notices_create
from events.models import RealtimeEvent
from harry_realtime.tenancy import dangerously_platform_context
from school.models import HomeTask, StudentAchievement, StudentRanking, User, UserRelationship
from school.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def captured(table: str, record_id) -> RealtimeEvent:
    """The newest captured event of this row."""
    with dangerously_platform_context():
        return RealtimeEvent.objects.filter(source_table=table, source_record_id=record_id).order_by("-seq").first()


def derive(event: RealtimeEvent) -> list[RealtimeEvent]:
    """The listener's step for one event: store its family notices."""
    with dangerously_platform_context():
        return family_notices_create([event])


def notices(user) -> list[RealtimeEvent]:
    with dangerously_platform_context():
        return list(RealtimeEvent.objects.filter(target_user=user, event_metadata__event="family_notice"))


def payload(event: RealtimeEvent) -> dict:
    (first, *_) = domain.broadcasts(event)
    return first[2]["payload"]


def mark(school, as_user, status: str) -> RealtimeEvent:
    with as_user(school.teacher_user):
        school.attendance.status = status
        school.attendance.save()
    return captured("attendance", school.attendance.pk)


def test_an_absence_reaches_each_engaged_relative_in_their_language(schools, as_user):
    a = schools.a
    with dangerously_platform_context():
        User.objects.filter(pk=a.parent_user.pk).update(language="ar")
        grandmother = UserFactory(organization=a.org, role="parent", language="ru")
        UserRelationship.objects.create(
            organization=a.org, user_a=grandmother, user_b=a.student_user, relationship_type="guardian"
        )
    event = mark(a, as_user, "absent")
    stored = derive(event)

    assert {n.target_user_id for n in stored} == {a.parent_user.pk, grandmother.pk}
    (to_parent,) = notices(a.parent_user)
    assert to_parent.event_metadata["topics"] == [f"notifications:org_{a.org.pk}:role_parent"]
    assert to_parent.event_metadata["audience"]["target_user_id"] == str(a.parent_user.pk)
    assert (to_parent.broadcast_scope, to_parent.priority, to_parent.language_preference) == (
        "individual",
        "high",
        "ar",
    )
    body = to_parent.event_payload
    assert (body["kind"], body["status"], body["studentId"], body["correction"]) == (
        "family_attendance",
        "absent",
        str(a.student.pk),
        False,
    )
    # The status is translated inside the sentence, not left as the enum value.
    assert "غائب" in body["message"] and "absent" not in body["message"]
    assert a.student.full_name in body["message"]
    (to_grandmother,) = notices(grandmother)
    assert "отсутств" in to_grandmother.event_payload["message"]
    assert set(body["translations"]["message"]) == {"en", "uz", "ru", "ar"}
    # The group payload's flag reports exactly that.
    assert payload(event)["culturalContext"]["familyNotificationScheduled"] is True
    assert sorted(event.event_metadata["family_notices"]) == sorted([str(a.parent_user.pk), str(grandmother.pk)])
    assert captured("attendance", a.attendance.pk).event_metadata["family_notices"]  # stored too


def test_re_marking_sends_nothing_new_and_a_correction_reaches_those_told(schools, as_user):
    a = schools.a
    derive(mark(a, as_user, "absent"))
    assert derive(mark(a, as_user, "absent")) == []  # captured, but the status did not change

    with as_user(a.teacher_user):
        a.attendance.notes = "came with a note"
        a.attendance.save()
    same = captured("attendance", a.attendance.pk)
    assert derive(same) == [] and payload(same)["culturalContext"]["familyNotificationScheduled"] is False

    late = derive(mark(a, as_user, "late"))
    assert [n.event_payload["status"] for n in late] == ["late"]

    corrected = mark(a, as_user, "present")
    (correction,) = derive(corrected)
    body = correction.event_payload
    assert (body["kind"], body["status"], body["previousStatus"], body["correction"]) == (
        "family_attendance_correction",
        "present",
        "late",
        True,
    )
    assert payload(corrected)["culturalContext"]["familyNotificationScheduled"] is True

    again = mark(a, as_user, "absent")  # absent was already told for this day
    assert derive(again) == []
    assert payload(again)["culturalContext"]["familyNotificationScheduled"] is False
    assert len(notices(a.parent_user)) == 3


def test_present_or_excused_send_nothing_and_claim_nothing(schools, as_user):
    a = schools.a
    for status in ("excused", "sick"):
        event = mark(a, as_user, status)
        assert derive(event) == []
        assert payload(event)["culturalContext"]["familyNotificationScheduled"] is False
    assert notices(a.parent_user) == []


def test_a_relative_with_family_engagement_off_hears_nothing(schools, as_user):
    a = schools.a
    with dangerously_platform_context():
        User.objects.filter(pk=a.parent_user.pk).update(family_engagement=False)
    event = mark(a, as_user, "absent")
    assert derive(event) == []
    assert payload(event)["culturalContext"]["familyNotificationScheduled"] is False
    assert "family_notices" not in captured("attendance", a.attendance.pk).event_metadata


def test_connecting_with_family_engagement_sets_it(schools, client_for):
    a = schools.a
    client = client_for(a.parent_user)
    body = {
        "deviceId": "parent-phone",
        "platform": "ios",
        "appVersion": "1.0",
        "subscriptionTypes": ["notifications"],
        "culturalPreferences": {"familyEngagement": False},
    }
    assert client.post("/api/realtime/connect", body, format="json").status_code == 200
    with dangerously_platform_context():
        assert User.objects.get(pk=a.parent_user.pk).family_engagement is False


def test_tasks_of_children_under_16_reach_the_family_older_ones_do_not(schools, as_user):
    a = schools.a
    with dangerously_platform_context():
        older_parent = UserFactory(organization=a.org, role="parent")
        UserRelationship.objects.create(
            organization=a.org, user_a=older_parent, user_b=a.other_student_user, relationship_type="parent"
        )
    with as_user(a.teacher_user):
        young = HomeTask.objects.create(organization=a.org, student=a.student, teacher=a.teacher, title="Essay 2")
        old = HomeTask.objects.create(organization=a.org, student=a.other_student, teacher=a.teacher, title="Thesis")
    young_event, old_event = captured("home_tasks", young.pk), captured("home_tasks", old.pk)
    with dangerously_platform_context():
        stored = family_notices_create([young_event, old_event])

    (notice,) = stored
    assert (notice.target_user_id, notice.event_payload["kind"]) == (a.parent_user.pk, "family_task")
    assert "Essay 2" in notice.event_payload["message"]
    assert payload(young_event)["parentNotificationRequired"] is True
    assert payload(old_event)["parentNotificationRequired"] is False
    assert notices(older_parent) == []


def test_achievements_under_16_and_ranking_milestones_of_10_to_12_year_olds(schools, as_user):
    a = schools.a
    with as_user(a.teacher_user):
        award = StudentAchievement.objects.create(organization=a.org, student=a.student, achievement=a.achievement)
    achievement_event = captured("student_achievements", award.pk)
    (notice,) = derive(achievement_event)
    assert notice.event_payload["kind"] == "family_achievement" and "First steps" in notice.event_payload["message"]
    assert payload(achievement_event)["sharing"]["familyNotification"] is True

    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(total_points=130)  # +10: no milestone
    small = captured("student_rankings", a.ranking.pk)
    assert derive(small) == []
    assert payload(small)["culturalCelebration"]["familyNotificationRequired"] is False

    with as_user(a.teacher_user):
        StudentRanking.objects.filter(pk=a.ranking.pk).update(current_rank=2)  # rank up: a milestone
    milestone = captured("student_rankings", a.ranking.pk)
    (notice,) = derive(milestone)
    assert (notice.event_payload["kind"], notice.event_payload["newRank"]) == ("family_ranking", 2)
    assert payload(milestone)["culturalCelebration"]["familyNotificationRequired"] is True


def test_notices_stay_in_their_school(schools, as_user):
    a, b = schools.a, schools.b
    derive(mark(a, as_user, "absent"))
    assert notices(b.parent_user) == []
    with as_user(b.parent_user):
        assert not RealtimeEvent.objects.filter(event_metadata__event="family_notice").exists()
    with as_user(a.parent_user):
        assert RealtimeEvent.objects.filter(event_metadata__event="family_notice").count() == 1  # own, via RLS
    with as_user(a.student_user):
        assert not RealtimeEvent.objects.filter(event_metadata__event="family_notice").exists()
