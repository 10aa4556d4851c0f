"""Admin console of recorded values: read only (they are what a notebook recorded)."""

from django.contrib import admin

from recorded.models import RecordedValue


@admin.register(RecordedValue)
class RecordedValueAdmin(admin.ModelAdmin):
    list_display = ("name", "run", "kind", "number", "created_at")
    list_filter = ("kind",)
    search_fields = ("name", "run__job__name")
    raw_id_fields = ("run",)
    readonly_fields = ("run", "name", "kind", "number", "text", "data", "note", "position")

    def has_add_permission(self, request):
        return False
