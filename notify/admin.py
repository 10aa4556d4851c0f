"""Admin console of notifications: targets, and deliveries with their attempts (read
only: they are a log)."""

from django.contrib import admin

from notify.models import Delivery, DeliveryAttempt, NotificationTarget


@admin.register(NotificationTarget)
class NotificationTargetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "job", "kind", "display_url", "enabled", "created_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name", "job__name", "job__owner__email")
    raw_id_fields = ("job",)
    # The URL and secret may be credentials: staff can disable or delete a target, not
    # read them.
    exclude = ("url", "secret")
    readonly_fields = ("job", "kind", "display_url", "created_at")

    def has_add_permission(self, request):
        return False  # on the job's page, where the URL is checked and the secret shown


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    max_num = 0
    can_delete = False
    fields = ("number", "at", "status_code", "error", "seconds")
    readonly_fields = fields


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("uuid", "event", "job", "target", "state", "attempts", "created_at")
    list_filter = ("state", "event")
    search_fields = ("uuid", "job__name", "key")
    inlines = [DeliveryAttemptInline]
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request):
        return False
