from django.core.management.base import BaseCommand

from school.services import DEMO_PASSWORD, PLATFORM_LOGIN, demo_data_seed


class Command(BaseCommand):
    help = "Create the two demo schools and their logins (idempotent)."

    def handle(self, *args, **options):
        organizations = demo_data_seed()
        names = ", ".join(o.name for o in organizations)
        self.stdout.write(f"Demo data ready: {names}. Password for every demo login: {DEMO_PASSWORD}")
        self.stdout.write(f"Platform superuser (all schools, admin only): {PLATFORM_LOGIN}")
