"""`python manage.py cultural_context --date D [--time HH:MM] [--lat --lon --tz --country | --org SLUG]`

Prints the cultural context JSON (Hijri date, Ramadan flag, prayer times, prayer status) for a
place, for scripts. Defaults: Tashkent with the Muslim Board of Uzbekistan's method; `--org`
takes a school's location and settings instead. Announced Hijri month starts come from the
database's override table for the country.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from culture.api.views import FIRST_DAY, LAST_DAY
from culture.prayer import Location, Method
from culture.selectors import context_at, hijri_overrides, location_of, method_for
from harry_realtime.tenancy import Tenant, dangerously_platform_context, tenant_context
from school.models import Organization

TASHKENT = Location(latitude=41.2995, longitude=69.2401, timezone="Asia/Tashkent", country="UZ")


class Command(BaseCommand):
    help = "Print the cultural context (Hijri date, Ramadan, prayer times and status) as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--date", help="YYYY-MM-DD (default: today in the place's timezone)")
        parser.add_argument("--time", help="HH:MM local time (default: now's time of day)")
        parser.add_argument("--lat", type=float, default=TASHKENT.latitude)
        parser.add_argument("--lon", type=float, default=TASHKENT.longitude)
        parser.add_argument("--tz", default=TASHKENT.timezone)
        parser.add_argument("--country", default=TASHKENT.country, help="ISO 3166-1 alpha-2")
        parser.add_argument("--org", help="an organization's slug: use its location and settings")

    def handle(self, *args, **options):
        if options["org"]:
            location, method, overrides = self._organization(options["org"])
        else:
            location, method = self._location(options), Method()
            overrides = hijri_overrides(location.country)
        at = self._moment(options, location)
        self.stdout.write(json.dumps(context_at(at, location, method, overrides), ensure_ascii=False, indent=2))

    def _location(self, options) -> Location:
        if not -90 <= options["lat"] <= 90 or not -180 <= options["lon"] <= 180:
            raise CommandError("--lat must be within [-90, 90] and --lon within [-180, 180]")
        try:
            ZoneInfo(options["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise CommandError(f"unknown timezone {options['tz']!r}") from None
        country = options["country"].upper()
        if len(country) != 2 or not country.isalpha():
            raise CommandError("--country must be an ISO 3166-1 alpha-2 code, e.g. UZ")
        return Location(latitude=options["lat"], longitude=options["lon"], timezone=options["tz"], country=country)

    def _organization(self, slug: str):
        with dangerously_platform_context():
            organization_id = Organization.objects.filter(slug=slug).values_list("id", flat=True).first()
        if organization_id is None:
            raise CommandError(f"no organization with slug {slug!r}")
        with tenant_context(Tenant(organization_id=organization_id)):
            organization = Organization.objects.get(pk=organization_id)
            location = location_of(organization)
            return location, method_for(organization), hijri_overrides(location.country)

    def _moment(self, options, location: Location) -> datetime:
        now = timezone.now().astimezone(location.zone)
        try:
            day = date.fromisoformat(options["date"]) if options["date"] else now.date()
            clock = time.fromisoformat(options["time"]) if options["time"] else now.time().replace(microsecond=0)
        except ValueError as error:
            raise CommandError(f"--date must be YYYY-MM-DD and --time HH:MM ({error})") from None
        if not FIRST_DAY <= day <= LAST_DAY:
            raise CommandError(f"--date must be between {FIRST_DAY} and {LAST_DAY}")
        return datetime.combine(day, clock, location.zone)
