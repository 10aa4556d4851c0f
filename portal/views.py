"""Project-wide views: the health check."""

from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import JsonResponse
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
