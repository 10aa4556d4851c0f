"""Per-user limits in the admin: their own list, and an inline on each user's page."""

from django.contrib import admin

from quotas.models import BudgetNotice, UserLimits


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = (
        "user",
        "max_jobs",
        "max_active_runs",
        "max_running_runs",
        "min_schedule_interval",
        "monthly_node_hours",
        "monthly_cost",
        "updated_at",
    )
    search_fields = ("user__email", "user__username", "note")
    autocomplete_fields = ("user",)


class UserLimitsInline(admin.StackedInline):
    """The user's overrides on their page in the admin (empty fields: the defaults)."""

    model = UserLimits
    can_delete = True
    extra = 0
    max_num = 1
    verbose_name_plural = "limits (empty fields take the portal's defaults; staff: no limit)"


@admin.register(BudgetNotice)
class BudgetNoticeAdmin(admin.ModelAdmin):
    list_display = ("user", "month", "budget", "percent", "sent_at")
    list_filter = ("budget", "month")
    search_fields = ("user__email",)
