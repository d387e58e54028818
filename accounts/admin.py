"""API keys in the admin: whose key, which scope, whether it is in use or revoked."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.auth import api_key_create
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

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "scope", "user"]
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        # Through the service, as `manage.py create_api_key`: a random key, only its hash stored.
        row, plain = api_key_create(name=obj.name, scope=obj.scope, user=obj.user)
        obj.pk, obj.prefix, obj.key_hash, obj.created_at = row.pk, row.prefix, row.key_hash, row.created_at
        request._api_key_plain = plain

    def response_add(self, request, obj, post_url_continue=None):
        """The key is shown on this one page, never stored, never put in a message or a cookie."""
        plain = getattr(request, "_api_key_plain", "")
        if not plain:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "key": obj, "plain": plain, "title": "API key created"}
        response = TemplateResponse(request, "admin/accounts/apikey/created.html", context)
        response["Cache-Control"] = "no-store"
        return response

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
