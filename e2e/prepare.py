#!/usr/bin/env python
"""Fresh database for end-to-end tests and benchmarks: create, migrate, seed two schools.

  prepare.py create NAME   prints JSON: the server environment and the seeded ids
  prepare.py drop NAME     drops the database

Runs as the owner role like the Python suite (`harry_owner` creates and migrates, `harry_app`
serves); the seed is written through the platform role, as the `schools` fixture does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def with_name(url: str, name: str) -> str:
    return urlsplit(url)._replace(path="/" + name).geturl()


def create(name: str) -> dict:
    os.environ["TEST_DB_NAME"] = name
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    from harry_realtime.tenancy import dangerously_platform_context
    from school.models import TeacherGroupAssignment
    from school.tests.factories import TeacherFactory, UserFactory, build_school

    connections["owner"].creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    connections["default"].settings_dict["NAME"] = name
    with dangerously_platform_context():
        schools = {"a": build_school("Alpha", "alpha"), "b": build_school("Bravo", "bravo")}
        for key, school in schools.items():
            # A second teacher of group A: attendance collaboration is between two teachers.
            school.co_teacher_user = UserFactory(
                organization=school.org, role="teacher", username=f"co-teacher@{key}.test"
            )
            co_teacher = TeacherFactory(organization=school.org, user=school.co_teacher_user)
            TeacherGroupAssignment.objects.create(organization=school.org, teacher=co_teacher, group=school.group)
    out = {
        "db": name,
        "env": {
            "DATABASE_URL": with_name(settings.DATABASE_URL, name),
            "DATABASE_OWNER_URL": with_name(settings.DATABASE_OWNER_URL, name),
        },
        "schools": {},
    }
    for key, school in schools.items():
        users = {}
        for label in ("admin", "teacher", "co_teacher", "outsider", "student", "other_student", "parent"):
            user = getattr(school, f"{label}_user")
            users[label] = {"id": str(user.pk), "role": user.role, "organization_id": str(user.organization_id)}
        out["schools"][key] = {
            "org": str(school.org.pk),
            "group": str(school.group.pk),
            "other_group": str(school.other_group.pk),
            "teacher": str(school.teacher.pk),
            "student": str(school.student.pk),
            "other_student": str(school.other_student.pk),
            "users": users,
        }
    return out


def drop(name: str) -> None:
    import psycopg
    from django.conf import settings

    owner = urlsplit(settings.DATABASE_OWNER_URL)
    with psycopg.connect(
        settings.DATABASE_OWNER_URL.replace(owner.scheme + "://", "postgresql://", 1), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    command, db_name = sys.argv[1], sys.argv[2]
    if not db_name.replace("_", "").isalnum():
        sys.exit("database names are letters, digits and underscores")
    if command == "create":
        print(json.dumps(create(db_name)))
    elif command == "drop":
        import django

        django.setup()
        drop(db_name)
    else:
        sys.exit(__doc__)
