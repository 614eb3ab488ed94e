"""Factories for the school tables. Call them inside a tenant or platform context."""

from datetime import date
from types import SimpleNamespace

import factory
from factory.django import DjangoModelFactory

from school import models

DEMO_PASSWORD = "harry-demo"


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = models.Organization

    name = factory.Sequence(lambda n: f"School {n}")
    slug = factory.Sequence(lambda n: f"school-{n}")
    latitude = "41.299500"
    longitude = "69.240100"
    timezone = "Asia/Tashkent"


class UserFactory(DjangoModelFactory):
    class Meta:
        model = models.User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}@example.uz")
    full_name = factory.Sequence(lambda n: f"User {n}")
    role = models.Role.STUDENT
    language = "en"
    password = factory.PostGenerationMethodCall("set_password", DEMO_PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class TeacherFactory(DjangoModelFactory):
    class Meta:
        model = models.Teacher

    full_name = factory.Sequence(lambda n: f"Teacher {n}")


class StudentFactory(DjangoModelFactory):
    class Meta:
        model = models.Student

    full_name = factory.Sequence(lambda n: f"Student {n}")
    date_of_birth = date(2013, 5, 1)


class GroupFactory(DjangoModelFactory):
    class Meta:
        model = models.Group

    name = factory.Sequence(lambda n: f"Group {n}")
    subject = "English"


def build_school(name: str, slug: str) -> SimpleNamespace:
    """A school with an admin, a teacher of group A, a student of group A and their parent,
    an outsider teacher (no groups), a student of group B, and a ranking, task and achievement."""
    org = OrganizationFactory(name=name, slug=slug)
    mk = lambda role, label: UserFactory(organization=org, role=role, username=f"{label}@{slug}.test")
    admin_user = mk("admin", "admin")
    teacher_user = mk("teacher", "teacher")
    outsider_user = mk("teacher", "outsider")
    student_user = mk("student", "student")
    other_student_user = mk("student", "other-student")
    parent_user = mk("parent", "parent")
    teacher = TeacherFactory(organization=org, user=teacher_user)
    outsider = TeacherFactory(organization=org, user=outsider_user)
    group = GroupFactory(organization=org, name=f"{name} A")
    other_group = GroupFactory(organization=org, name=f"{name} B")
    student = StudentFactory(organization=org, user=student_user, date_of_birth=date(2014, 3, 1))
    other_student = StudentFactory(organization=org, user=other_student_user, date_of_birth=date(2009, 3, 1))
    models.TeacherGroupAssignment.objects.create(organization=org, teacher=teacher, group=group)
    models.StudentGroupEnrollment.objects.create(organization=org, student=student, group=group)
    models.StudentGroupEnrollment.objects.create(organization=org, student=other_student, group=other_group)
    models.UserRelationship.objects.create(
        organization=org, user_a=parent_user, user_b=student_user, relationship_type="parent"
    )
    ranking = models.StudentRanking.objects.create(organization=org, student=student, current_rank=5, total_points=120)
    achievement = models.Achievement.objects.create(organization=org, name="First steps", points_reward=10)
    award = models.StudentAchievement.objects.create(organization=org, student=student, achievement=achievement)
    task = models.HomeTask.objects.create(
        organization=org, student=student, group=group, teacher=teacher, title="Essay"
    )
    feedback = models.FeedbackEntry.objects.create(organization=org, student=student, teacher=teacher, content="Good")
    attendance = models.Attendance.objects.create(
        organization=org, student=student, group=group, teacher=teacher, status="present", marked_by=teacher_user
    )
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("mk",)})
