"""Users in the admin: searchable by e-mail (the sign-in name) for the job owner field."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from quotas.admin import UserLimitsInline

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = ("username", "email", "is_staff", "is_active", "last_login", "date_joined")
    search_fields = ("username", "email", "first_name", "last_name")
    inlines = [UserLimitsInline]
