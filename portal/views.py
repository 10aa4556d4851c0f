"""Project-wide views: the health check, and the admin's way in."""

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache


@login_not_required
@never_cache
def health(request):
    """200 with {"database": "ok"} when the database answers; 503 otherwise (load balancers)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"database": "unavailable"}, status=503)
    return JsonResponse({"database": "ok"})


@login_not_required
@never_cache
def admin_login(request, extra_context=None):
    """``/admin/login/``: the admin signs in through the portal's own sign-in (allauth: rate
    limited, e-mail verification, single sign-on), never through Django's admin form,
    which has neither. Signed-in staff go on to ``next``; other signed-in users get 403."""
    target = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("admin:index")
    if request.user.is_authenticated:
        if request.user.is_staff:
            return redirect(target)
        raise PermissionDenied("The admin console is for the portal's staff.")
    return redirect_to_login(target, reverse("account_login"))
