"""GET /api/culture/context?date=YYYY-MM-DD: the caller's school's cultural context."""

from __future__ import annotations

from datetime import date, datetime

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from harry_realtime.api import TenantAPIView
from harry_realtime.errors import Invalid
from school.models import Organization

from .. import messages
from ..selectors import cultural_context_for, location_of

# hijridate's Umm al-Qura table covers 1343-1500 AH.
FIRST_DAY = date(1924, 8, 1)
LAST_DAY = date(2077, 11, 16)


def parse_day(raw: str | None, *, language: str | None = None) -> date | None:
    """None when absent; raises Invalid (message in `language`) for a bad or unsupported date."""
    if raw in (None, ""):
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        message = messages.translated(messages.ERROR_DATE_INVALID, language)
        raise Invalid("invalid_date", message, details={"date": raw}) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        message = messages.translated(messages.ERROR_DATE_OUT_OF_RANGE, language)
        raise Invalid("date_out_of_range", message, details={"date": raw})
    return day


class CulturalContextView(TenantAPIView):
    """Without `date`: the context now. With `date`: that day's context at the current local
    time of day (so a client can preview tomorrow's timetable and Hijri date)."""

    @extend_schema(
        parameters=[OpenApiParameter("date", OpenApiTypes.DATE, description="YYYY-MM-DD, 1924-08-01..2077-11-16")],
        responses={
            200: OpenApiResponse(
                OpenApiTypes.OBJECT, description="Prayer times, Hijri date, Ramadan mode… (docs/culture.md)"
            )
        },
    )
    def get(self, request):
        day = parse_day(request.query_params.get("date"), language=request.user.language)
        organization = Organization.objects.get(pk=self.tenant.organization_id)
        at = timezone.now()
        if day is not None:
            zone = location_of(organization).zone
            at = datetime.combine(day, at.astimezone(zone).time().replace(microsecond=0), zone)
        return Response(cultural_context_for(organization, at))
