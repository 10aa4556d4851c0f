"""Admin console for scheduled notebooks: jobs, versions, runs, with their actions.

Actions call the same services as the portal's views, so an admin "Run now" or "Cancel"
behaves exactly like the owner's.
"""

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html

from jobs import services
from jobs.models import Job, NotebookVersion, Run, RunEvent
from jobs.templatetags.retention import output_retention
from quotas.limits import LimitExceeded


class ReadOnlyInline(admin.TabularInline):
    """History shown under its parent: never added or deleted from the admin."""

    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class RunInline(ReadOnlyInline):
    model = Run
    fields = ("link", "state", "trigger", "scheduled_for", "attempt", "started_at", "finished_at")
    readonly_fields = fields
    ordering = ("-created_at",)
    show_change_link = False

    @admin.display(description="Run")
    def link(self, run):
        if run.pk is None:
            return "—"
        return format_html('<a href="{}">#{}</a>', run.get_absolute_url(), run.pk)


class NotebookVersionInline(ReadOnlyInline):
    model = NotebookVersion
    fields = ("number", "original_name", "size_bytes", "sha256", "uploaded_by", "created_at")
    readonly_fields = fields


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "schedule_kind",
        "cron",
        "timezone",
        "enabled",
        "next_run_at",
        "visibility",
        "outputs_kept",
    )
    list_filter = ("enabled", "schedule_kind", "visibility", "catchup", "overlap", "timezone")
    search_fields = ("name", "description", "owner__email", "owner__username")
    readonly_fields = ("next_run_at", "created_at", "updated_at")
    autocomplete_fields = ("owner",)
    inlines = [NotebookVersionInline, RunInline]
    actions = ["run_now", "pause", "resume"]

    def has_add_permission(self, request):
        # A job starts from an uploaded notebook, validated and versioned by the portal's
        # own form (New job); the admin edits and operates existing jobs.
        return False

    @admin.display(description="Outputs kept", ordering="output_retention_days")
    def outputs_kept(self, job):
        return output_retention(job)

    def save_model(self, request, obj, form, change):
        # A changed schedule, zone or enabled flag moves the next slot, as in the portal.
        # (The cron and time zone validators are the model fields' own.)
        if {"cron", "timezone", "enabled"} & set(form.changed_data):
            obj.reschedule(timezone.now())
        super().save_model(request, obj, form, change)

    @admin.action(description="Run now")
    def run_now(self, request, queryset):
        started = 0
        for job in queryset:
            try:
                services.run_now(job, request.user)
                started += 1
            except LimitExceeded as exc:
                self.message_user(request, f"{job}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Started {started} run(s).", messages.SUCCESS)

    @admin.action(description="Pause")
    def pause(self, request, queryset):
        for job in queryset:
            services.set_job_enabled(job, False)
        self.message_user(request, f"Paused {queryset.count()} job(s).", messages.SUCCESS)

    @admin.action(description="Resume")
    def resume(self, request, queryset):
        for job in queryset:
            services.set_job_enabled(job, True)
        self.message_user(request, f"Resumed {queryset.count()} job(s).", messages.SUCCESS)


@admin.register(NotebookVersion)
class NotebookVersionAdmin(admin.ModelAdmin):
    list_display = ("job", "number", "original_name", "size_bytes", "uploaded_by", "created_at")
    search_fields = ("job__name", "original_name", "sha256")
    readonly_fields = [f.name for f in NotebookVersion._meta.fields]
    list_select_related = ("job", "uploaded_by")

    def has_add_permission(self, request):
        return False  # versions come from uploads (New job, Upload a new version)


class RunEventInline(ReadOnlyInline):
    model = RunEvent
    fields = ("at", "attempt", "state", "worker", "message")
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "job",
        "state",
        "trigger",
        "scheduled_for",
        "attempt",
        "worker",
        "started_at",
        "finished_at",
    )
    list_filter = (
        "state",
        "trigger",
        ("output_expired_at", admin.EmptyFieldListFilter),
        "job__owner",
    )
    search_fields = ("=id", "uuid", "job__name", "error_ename", "worker")
    date_hierarchy = "created_at"
    list_select_related = ("job",)
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [RunEventInline]
    actions = ["cancel", "rerun"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        active = [run for run in queryset if run.state in Run.ACTIVE_STATES]
        for run in active:
            services.cancel_run(run, request.user)
        skipped = queryset.count() - len(active)
        note = f" {skipped} had already ended." if skipped else ""
        self.message_user(
            request,
            f"Asked {len(active)} run(s) to cancel.{note}",
            messages.SUCCESS if active else messages.WARNING,
        )

    @admin.action(description="Re-run")
    def rerun(self, request, queryset):
        started = 0
        for run in queryset:
            try:
                services.rerun(run, request.user)
                started += 1
            except LimitExceeded as exc:
                self.message_user(request, f"{run}: {exc.message}", messages.WARNING)
        self.message_user(request, f"Started {started} re-run(s).", messages.SUCCESS)
