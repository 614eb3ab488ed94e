"""Topic builders and topic patterns agree: what a builder makes, the pattern parses back."""

import uuid

import pytest

from events import topics


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (topics.rankings_topic, "rankings"),
        (topics.tasks_topic, "tasks"),
        (topics.attendance_topic, "attendance"),
        (topics.groups_topic, "groups"),
    ],
)
def test_each_builder_makes_a_topic_its_pattern_parses(build, kind):
    org, subject = uuid.uuid4(), uuid.uuid4()
    parsed = topics.parse_topic(build(org, subject))
    assert (parsed.kind, parsed.organization_id, parsed.subject) == (kind, str(org), str(subject))


@pytest.mark.parametrize("role", topics.ROLE_TOPIC_VALUES)
def test_the_notifications_builder_covers_every_role_value(role):
    org = uuid.uuid4()
    parsed = topics.parse_topic(topics.notifications_topic(org, role))
    assert (parsed.kind, parsed.organization_id, parsed.subject) == ("notifications", str(org), role)


def test_every_pattern_has_a_builder():
    builders = {"rankings", "tasks", "attendance", "groups", "notifications"}
    assert set(topics.PATTERNS) == builders
