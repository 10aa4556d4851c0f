"""Admin console for clusters, SSH keys and the EMR releases offered to users."""

from django.contrib import admin, messages

from clusters import services
from clusters.models import Cluster, EMRRelease, SSHKey


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "backend",
        "state",
        "size",
        "started_at",
        "expires_at",
        "node_hours",
        "estimated_cost",
    )
    list_filter = ("state", "backend", "owner")
    search_fields = ("name", "owner__email", "owner__username", "jobflow_id", "=uuid")
    readonly_fields = [f.name for f in Cluster._meta.fields if f.name not in ("expires_at",)]
    list_select_related = ("owner",)
    actions = ["terminate", "extend_two_hours"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Terminate")
    def terminate(self, request, queryset):
        for cluster in queryset:
            services.request_termination(cluster, reason=f"Terminated by {request.user} (admin).")
        self.message_user(request, f"Terminating {queryset.count()} cluster(s).", messages.SUCCESS)

    @admin.action(description="Extend by 2 hours")
    def extend_two_hours(self, request, queryset):
        done = 0
        for cluster in queryset:
            try:
                services.extend_cluster(cluster, 2, request.user)
                done += 1
            except services.ClusterError as exc:
                self.message_user(request, f"{cluster}: {exc}", messages.WARNING)
        self.message_user(request, f"Extended {done} cluster(s).", messages.SUCCESS)


@admin.register(SSHKey)
class SSHKeyAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "key_type", "bits", "fingerprint", "created_at")
    search_fields = ("title", "owner__email", "fingerprint", "comment")
    readonly_fields = ("key_type", "bits", "fingerprint", "comment", "created_at")

    def has_add_permission(self, request):
        return False  # users add keys on their SSH keys page, where they are parsed and checked


@admin.register(EMRRelease)
class EMRReleaseAdmin(admin.ModelAdmin):
    list_display = ("label", "spark_version", "status", "is_active", "notes")
    list_filter = ("status", "is_active")
    list_editable = ("status", "is_active")
