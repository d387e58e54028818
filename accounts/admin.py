"""API keys in the admin: whose key, which scope, whether it is in use or revoked."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from accounts.models import ApiKey
from ragsite.admin import ago, badge, clipped, counted, with_sub


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name_wide", "access", "state", "used", "created"]
    list_display_links = ["name_wide"]
    list_filter = ["scope", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["user"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        # Keys are created with `manage.py create_api_key`, which prints the key once.
        return False

    @admin.display(description="name", ordering="name")
    def name_wide(self, obj):
        owner = f" · {obj.user.get_username()}" if obj.user else ""
        return with_sub(clipped(obj.name), f"{obj.prefix}…{owner}")

    @admin.display(description="scope", ordering="scope")
    def access(self, obj):
        return badge("read and write", "warn") if obj.can_write else badge("read", "quiet")

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj):
        if obj.revoked_at:
            return with_sub(badge("revoked", "bad"), ago(obj.revoked_at))
        return badge("active", "ok")

    @admin.display(description="last used", ordering="last_used_at")
    def used(self, obj):
        return ago(obj.last_used_at) if obj.last_used_at else "never"

    @admin.display(description="created", ordering="created_at")
    def created(self, obj):
        return ago(obj.created_at)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        selected = queryset.count()
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        message = f"Revoked {counted(count, 'API key')}"
        if selected > count:
            already = selected - count
            message += f"; {already} {'was' if already == 1 else 'were'} already revoked"
        self.message_user(request, message + ".", messages.SUCCESS if count else messages.WARNING)
