"""The outbox (read-only: the pipeline writes it) for school staff, scoped by row-level security,
and the Announcements page: send a system announcement (to one role or the whole school) or an
emergency alert, the same as `POST /api/realtime/announcements`, and see each one's delivery.
Connections are listed with presence (presence/admin.py)."""

from datetime import timedelta

from django import forms
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from events.announcements import announcement_create, announcement_delivery
from events.models import LANGUAGES, Announcement, RealtimeEvent
from harry_realtime.admin import ReadOnlyAdmin, TenantAdmin


@admin.register(RealtimeEvent)
class RealtimeEventAdmin(ReadOnlyAdmin):
    list_display = (
        "seq",
        "event_type",
        "priority",
        "broadcast_scope",
        "target",
        "source_table",
        "delivery_status",
        "delivery_attempts",
        "created_at",
        "processed_at",
    )
    list_filter = ("delivery_status", "event_type", "priority", "event_category", "broadcast_scope", "source_table")
    search_fields = ("=seq", "=source_record_id", "target_user__username", "target_user__full_name", "event_type")
    list_select_related = ("target_user", "target_group")
    date_hierarchy = "created_at"
    ordering = ("-seq",)

    @admin.display(description="target")
    def target(self, event: RealtimeEvent) -> str:
        return str(event.target_user or event.target_group or event.broadcast_scope)


RTL = {"dir": "auto"}  # Arabic (and any right-to-left text) renders right to left


class AnnouncementForm(forms.ModelForm):
    title_en = forms.CharField(label=_("Title (English)"), max_length=200, widget=forms.TextInput(attrs=RTL))
    message_en = forms.CharField(label=_("Message (English)"), max_length=2000, widget=forms.Textarea(attrs=RTL))
    title_uz = forms.CharField(
        label=_("Title (Uzbek)"), max_length=200, required=False, widget=forms.TextInput(attrs=RTL)
    )
    message_uz = forms.CharField(
        label=_("Message (Uzbek)"), max_length=2000, required=False, widget=forms.Textarea(attrs=RTL)
    )
    title_ru = forms.CharField(
        label=_("Title (Russian)"), max_length=200, required=False, widget=forms.TextInput(attrs=RTL)
    )
    message_ru = forms.CharField(
        label=_("Message (Russian)"), max_length=2000, required=False, widget=forms.Textarea(attrs=RTL)
    )
    title_ar = forms.CharField(
        label=_("Title (Arabic)"), max_length=200, required=False, widget=forms.TextInput(attrs=RTL)
    )
    message_ar = forms.CharField(
        label=_("Message (Arabic)"), max_length=2000, required=False, widget=forms.Textarea(attrs=RTL)
    )
    expires_in_hours = forms.IntegerField(label=_("Expires after (hours)"), min_value=1, max_value=720, initial=72)

    class Meta:
        model = Announcement
        fields = ("kind", "audience")

    def clean(self):
        data = super().clean()
        if data.get("kind") == "emergency_alert" and data.get("audience") != "all":
            self.add_error("audience", _("An emergency alert goes to the whole school."))
        return data

    def texts(self, part: str) -> dict[str, str]:
        return {
            lang: self.cleaned_data[f"{part}_{lang}"] for lang in LANGUAGES if self.cleaned_data.get(f"{part}_{lang}")
        }


@admin.register(Announcement)
class AnnouncementAdmin(TenantAdmin):
    form = AnnouncementForm
    list_display = ("__str__", "kind", "audience", "created_at", "created_by", "recipients", "live", "push", "not_yet")
    list_filter = ("kind", "audience")
    date_hierarchy = "created_at"
    list_select_related = ("created_by",)
    readonly_fields = ("kind", "audience", "title", "message", "created_by", "created_at", "expires_at", "delivery")

    def get_fieldsets(self, request, obj=None):
        if obj is not None:
            return [(None, {"fields": self.readonly_fields})]
        texts = [f"{part}_{lang}" for lang in LANGUAGES for part in ("title", "message")]
        return [(None, {"fields": ("kind", "audience", *texts, "expires_in_hours")})]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def has_add_permission(self, request):
        # A school's admins send them; a platform superuser has no school to address.
        user = request.user
        return user.role == "admin" and bool(user.organization_id) and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None):
        return False  # sent is sent; the page shows it and its delivery

    def has_delete_permission(self, request, obj=None):
        return False  # its copies stay in the outbox; deleting would orphan the summary

    def save_model(self, request, obj, form, change):
        sent = announcement_create(
            sender=request.user,
            kind=form.cleaned_data["kind"],
            audience=form.cleaned_data["audience"],
            title=form.texts("title"),
            message=form.texts("message"),
            expires_in=timedelta(hours=form.cleaned_data["expires_in_hours"]),
        )
        # The admin logs and redirects to `obj`: make it the stored announcement.
        for field in Announcement._meta.concrete_fields:
            setattr(obj, field.attname, getattr(sent, field.attname))
        obj._state.adding = False

    def _summary(self, obj) -> dict[str, int]:
        if not hasattr(obj, "_delivery"):
            obj._delivery = announcement_delivery(obj)
        return obj._delivery

    @admin.display(description=_("recipients"))
    def recipients(self, obj):
        return self._summary(obj)["recipients"]

    @admin.display(description=_("reached live"))
    def live(self, obj):
        return self._summary(obj)["live"]

    @admin.display(description=_("reached by push"))
    def push(self, obj):
        return self._summary(obj)["push"]

    @admin.display(description=_("not yet"))
    def not_yet(self, obj):
        return self._summary(obj)["notYet"]

    @admin.display(description=_("delivery"))
    def delivery(self, obj):
        summary = self._summary(obj)
        return (
            _(
                "%(recipients)d recipients: %(live)d reached live, %(push)d by push, %(expired)d expired, "
                "%(notYet)d not yet"
            )
            % summary
        )
