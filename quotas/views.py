"""The Usage page: a user's month (this one or the last), and for staff every user's."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from quotas import report, usage


class AuthenticatedRequest(HttpRequest):
    """A request of a signed-in user: LoginRequiredMiddleware admits no other here."""

    user: User


@require_GET
def usage_page(request: AuthenticatedRequest) -> HttpResponse:
    """``/usage/``: the signed-in user's use this month, or last month with
    ``?month=last``. Staff also see every user's month, and any user's page with
    ``?user=<id>`` (404 for an unknown id); others' ``?user=`` is ignored."""
    now = timezone.now()
    this_month = usage.month_start(now)
    last = request.GET.get("month") == "last"
    start = usage.previous_month(this_month) if last else this_month
    subject = request.user
    if request.user.is_staff and request.GET.get("user", "").isdigit():
        subject = get_object_or_404(get_user_model(), pk=int(request.GET["user"]))
    month = report.month_report(subject, start, now)
    return render(
        request,
        "quotas/usage.html",
        {
            "subject": subject,
            "report": month,
            "last": last,
            "this_month": this_month,
            "last_month": usage.previous_month(this_month),
            "users": report.all_users(start, now) if request.user.is_staff else None,
        },
    )
