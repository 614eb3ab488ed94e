"""Row-level security for device tokens and per-device deliveries.

Device tokens are visible to their owner and the school's admins only: a token is a delivery
address, so teachers and other family members have no business reading it.

`push_release_device_token(token)` deactivates the active row of a token whoever owns it, so a
phone that signs in as someone else (possibly in another school) stops receiving the previous
user's pushes. The caller cannot see that row, so the function runs as the schema owner
(SECURITY DEFINER) and a policy lets exactly that role flip `is_active` on this table. Knowing a
token is the only way to name it, and the token lives on the device itself.
"""

from django.db import migrations

from harry_realtime import rls

IN_ORG = "organization_id = app_org_id()"
OWNER_OR_ADMIN = f"{IN_ORG} AND (user_id = app_user_id() OR app_role() = 'admin')"
ADMIN = f"{IN_ORG} AND app_role() = 'admin'"

RELEASE_FUNCTION = """
CREATE POLICY owner_release ON push_device_tokens FOR ALL TO CURRENT_USER USING (true) WITH CHECK (true);
CREATE FUNCTION push_release_device_token(p_token text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE released integer;
BEGIN
    UPDATE push_device_tokens
       SET is_active = false, deactivated_at = now(), deactivation_reason = 'registered_by_another_user'
     WHERE token = p_token AND is_active;
    GET DIAGNOSTICS released = ROW_COUNT;
    RETURN released;
END $$;
-- The post-migrate grant gives the app and platform roles EXECUTE; nobody else gets it.
REVOKE ALL ON FUNCTION push_release_device_token(text) FROM PUBLIC;
"""
DROP_RELEASE_FUNCTION = """
DROP FUNCTION IF EXISTS push_release_device_token(text);
DROP POLICY IF EXISTS owner_release ON push_device_tokens;
"""


class Migration(migrations.Migration):
    dependencies = [("notifications", "0004_device_tokens_and_deliveries")]
    operations = [
        rls.rls_table("push_device_tokens"),
        rls.policy("push_device_tokens", "device_select", command="SELECT", using=OWNER_OR_ADMIN),
        rls.policy_insert("push_device_tokens", "device_insert", check=f"{IN_ORG} AND user_id = app_user_id()"),
        rls.policy("push_device_tokens", "device_update", command="UPDATE", using=OWNER_OR_ADMIN, check=IN_ORG),
        rls.policy("push_device_tokens", "device_delete", command="DELETE", using=OWNER_OR_ADMIN),
        rls.updated_at_trigger("push_device_tokens"),
        migrations.RunSQL(RELEASE_FUNCTION, DROP_RELEASE_FUNCTION),
        rls.rls_table("push_deliveries"),
        rls.policy("push_deliveries", "delivery_admin", using=ADMIN, check=ADMIN),
        rls.updated_at_trigger("push_deliveries"),
    ]
