"""Admin console for personal API tokens: staff list anyone's and revoke them.

Tokens are made only on the API tokens page (their string is shown there, once); the admin
shows no digest at all and changes nothing but through its "Revoke" action.
"""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from api import tokens
from api.models import SCOPES, ApiToken


class StateFilter(admin.SimpleListFilter):
    """Active, expired or revoked (the precedence of ``api.tokens.state``)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.usable(now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


class ScopeFilter(admin.SimpleListFilter):
    """Tokens that hold a scope."""

    title = "scope"
    parameter_name = "scope"

    def lookups(self, request, model_admin):
        return [(scope, scope) for scope in SCOPES]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        # JSON containment is not on SQLite: match the scope as a whole quoted string.
        return queryset.filter(scopes__icontains=f'"{self.value()}"')


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "prefix",
        "scope_list",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_ip",
        "state",
    )
    list_filter = (StateFilter, ScopeFilter, "created_at", "last_used_at")
    search_fields = ("name", "=prefix", "user__email", "user__username", "last_used_ip")
    list_select_related = ("user",)
    # Never the digest, not even read-only: it is all an attacker needs to try guesses.
    fields = (
        "user",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # tokens are made on the API tokens page, which shows the string once

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False  # revoke instead: the row keeps who used it, when and from where

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes)

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return tokens.state(token)

    @admin.action(description="Revoke")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = tokens.revoke(queryset)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
