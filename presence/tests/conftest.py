import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from events.topics import group_name
from harry_realtime.tenancy import dangerously_platform_context
from school.models import TeacherGroupAssignment
from school.tests.factories import TeacherFactory, UserFactory


@pytest.fixture
def co_teacher_for():
    """`co_teacher_for(school, n)` → a new teacher user assigned to the school's group."""

    def make(school, label):
        with dangerously_platform_context():
            user = UserFactory(organization=school.org, role="teacher", username=f"{label}@{school.org.slug}.test")
            teacher = TeacherFactory(organization=school.org, user=user)
            TeacherGroupAssignment.objects.create(organization=school.org, teacher=teacher, group=school.group)
        return user

    return make


class TopicListener:
    """A channel-layer member of a topic's group, to see what the server broadcasts there."""

    def __init__(self, topic: str):
        self.layer = get_channel_layer()
        # A plain (not process-specific) channel: tests receive from several event loops.
        self.channel = f"presence-test-{uuid.uuid4().hex}"
        async_to_sync(self.layer.group_add)(group_name(topic), self.channel)

    def receive_all(self, timeout: float = 0.5) -> list[dict]:
        async def drain():
            import asyncio

            messages = []
            while True:
                try:
                    messages.append(await asyncio.wait_for(self.layer.receive(self.channel), timeout))
                except TimeoutError:
                    return messages

        return async_to_sync(drain)()


@pytest.fixture
def listen():
    return TopicListener
