#!/usr/bin/env python
"""Write one attendance row as a user would, for end-to-end tests (run through `h.python()`).

  attendance_write.py ORG_ID USER_ID ROLE GROUP_ID STUDENT_ID STATUS

Upserts today's row of (student, group) with STATUS inside `tenant_context(ORG, USER, ROLE)`, so
row-level security applies and the change-capture trigger stores the event as for any API write.
Used where the API has no route for the change (e.g. a group that has no teacher assigned).
Prints JSON `{"id", "group_id", "status", "created"}`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "harry_realtime.settings")


def main(org_id: str, user_id: str, role: str, group_id: str, student_id: str, status: str) -> dict:
    import django

    django.setup()
    from django.utils import timezone

    from harry_realtime.tenancy import Tenant, tenant_context
    from school.models import Attendance, Teacher

    with tenant_context(Tenant(org_id, user_id, role)):
        row = Attendance.objects.filter(
            student_id=student_id, group_id=group_id, attendance_date=timezone.localdate()
        ).first()
        created = row is None
        if created:
            teacher = Teacher.objects.filter(organization_id=org_id).order_by("pk").first()
            row = Attendance(
                organization_id=org_id,
                student_id=student_id,
                group_id=group_id,
                teacher=teacher,
                attendance_date=timezone.localdate(),
                created_by_id=user_id,
            )
        row.status = status
        row.marked_by_id = user_id
        row.updated_by_id = user_id
        row.save()
    return {"id": str(row.pk), "group_id": str(row.group_id), "status": row.status, "created": created}


if __name__ == "__main__":
    if len(sys.argv) != 7:
        sys.exit(__doc__)
    print(json.dumps(main(*sys.argv[1:])))
