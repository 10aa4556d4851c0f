"""The API tokens page (/tokens/): a signed-in user makes, sees and revokes their own
personal API tokens. A new token's string is in the response to its creation and nowhere
else (the portal keeps only its SHA-256): that response is never cached.

Tokens are fetched only through ``token_for_user``: others' tokens are 404 (staff revoke
anyone's in the admin).
"""

import logging

from django.contrib import messages
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from api import tokens
from api.forms import TokenForm
from api.models import ApiToken

log = logging.getLogger(__name__)


class AuthenticatedRequest(HttpRequest):
    """A request of a signed-in user: LoginRequiredMiddleware admits no other here."""

    user: User


def token_for_user(user: User, pk: int) -> ApiToken:
    """The token ``pk`` if ``user`` owns it, else Http404 (staff too: they use the admin)."""
    return get_object_or_404(ApiToken, pk=pk, user=user)


@never_cache
@require_http_methods(["GET", "POST"])
def token_list(request: AuthenticatedRequest) -> HttpResponse:
    """The user's tokens, newest first, and the form to make one. After a creation the
    page shows the new token's string, this once."""
    created: tuple[ApiToken, str] | None = None
    if request.method == "POST":
        form = TokenForm(request.POST)
        if form.is_valid():
            c = form.cleaned_data
            created = ApiToken.issue(request.user, c["name"], c["scopes"], c["expires_in_days"])
            log.info(
                "token issued token=%s user=%s scopes=%s",
                created[0].pk,
                request.user.pk,
                ",".join(created[0].scopes),
            )
            form = TokenForm()
    else:
        form = TokenForm()
    now = timezone.now()
    rows = [(token, tokens.state(token, now)) for token in request.user.api_tokens.all()]
    return render(
        request,
        "api/token_list.html",
        {
            "form": form,
            "rows": rows,
            "new_token": created[0] if created else None,
            "new_secret": created[1] if created else "",
        },
    )


@require_http_methods(["GET", "POST"])
def token_revoke(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    """GET: ask to confirm; POST: revoke the token (from its next request on, a 401)."""
    token = token_for_user(request.user, pk)
    if request.method == "POST":
        if tokens.revoke(ApiToken.objects.filter(pk=token.pk)):
            log.info("token revoked token=%s user=%s", token.pk, request.user.pk)
            messages.success(request, f"Token “{token.name}” revoked: it no longer works.")
        else:
            messages.info(request, f"Token “{token.name}” was already revoked.")
        return redirect("tokens-list")
    return render(request, "api/token_revoke.html", {"token": token})
