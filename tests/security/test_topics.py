"""Issue 13 item 7: topic names match in full, with canonical lowercase ids only."""

from __future__ import annotations

import pytest

from events.topics import TopicDenied, authorize_topic, parse_topic

pytestmark = pytest.mark.django_db


def test_canonical_topics_parse(schools):
    topic = parse_topic(f"notifications:org_{schools.a.org.pk}:role_teacher")
    assert (topic.kind, topic.organization_id, topic.subject) == ("notifications", str(schools.a.org.pk), "teacher")


@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\x00", ":x"])
def test_a_trailing_character_is_refused(schools, as_user, suffix):
    with as_user(schools.a.teacher_user), pytest.raises(TopicDenied):
        authorize_topic(schools.a.teacher_user, f"notifications:org_{schools.a.org.pk}:role_teacher{suffix}")


def test_uppercase_or_unhyphenated_ids_are_refused(schools, as_user):
    org = str(schools.a.org.pk)
    group = str(schools.a.group.pk)
    for name in (
        f"notifications:org_{org.upper()}:role_teacher",
        f"attendance:org_{org}:group_{group.upper()}",
        f"attendance:org_{org.replace('-', '')}:group_{group}",
        f"attendance:org_{{{org}}}:group_{group}",
    ):
        with as_user(schools.a.teacher_user), pytest.raises(TopicDenied):
            authorize_topic(schools.a.teacher_user, name)
    with as_user(schools.a.teacher_user):
        assert authorize_topic(schools.a.teacher_user, f"attendance:org_{org}:group_{group}").subject == group
