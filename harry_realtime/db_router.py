class OwnerMigratesRouter:
    """Schema changes run only as the owner role; the app role can read and write rows, no DDL."""

    def allow_migrate(self, db: str, app_label: str, **hints) -> bool:
        return db == "owner"
