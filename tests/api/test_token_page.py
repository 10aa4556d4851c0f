"""The API tokens page and the tokens admin: a token is shown once and works, the list
tells each token's use and state, revoking asks first and ends the token, others' tokens
are 404, and staff revoke anyone's in the admin, where no digest is ever shown."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from api.models import ApiToken, digest

pytestmark = pytest.mark.django_db

TOKEN = re.compile(r"pap_[A-Za-z0-9_-]{43}")


def me(client, token):
    """Status of GET /api/me/ with ``token``, outside any session."""
    client.logout()
    return client.get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def test_a_new_token_is_shown_once_and_works(alice_client, alice):
    response = alice_client.post(
        "/tokens/", {"name": "CI", "scopes": ["read", "run"], "expires_in_days": "30"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    shown = TOKEN.findall(html)
    assert len(set(shown)) == 1
    row = ApiToken.objects.get(user=alice)
    assert row.digest == digest(shown[0]) and row.scopes == ["read", "run"]
    assert row.expires_at is not None
    assert timedelta(days=29) < row.expires_at - timezone.now() <= timedelta(days=30)
    assert 'id="copy-token"' in html and "portal/copy.js" in html
    # Never again: the list shows its prefix only.
    again = alice_client.get("/tokens/").content.decode()
    assert shown[0] not in again and row.prefix in again and not TOKEN.search(again)
    assert me(alice_client, shown[0]) == 200


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "CI"}, "scopes", "Choose at least one scope."),
        ({"name": "CI", "scopes": ["admin"]}, "scopes", "Select a valid choice."),
        ({"scopes": ["read"]}, "name", "This field is required."),
        (
            {"name": "CI", "scopes": ["read"], "expires_in_days": "400"},
            "expires_in_days",
            "less than or equal to 366",
        ),
        (
            {"name": "CI", "scopes": ["read"], "expires_in_days": "0"},
            "expires_in_days",
            "greater than or equal to 1",
        ),
    ],
)
def test_a_bad_form_makes_no_token(alice_client, data, field, message):
    response = alice_client.post("/tokens/", data)
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert not TOKEN.search(response.content.decode())
    assert not ApiToken.objects.exists()


def test_the_list_shows_each_tokens_use_and_state_and_only_ones_own(alice_client, alice, bob):
    used, _ = ApiToken.issue(alice, "Used", ["read"])
    ApiToken.objects.filter(pk=used.pk).update(
        last_used_at=timezone.now(), last_used_ip="192.0.2.7"
    )
    expired, _ = ApiToken.issue(alice, "Old", ["jobs"], expires_in_days=1)
    ApiToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    revoked, _ = ApiToken.issue(alice, "Gone", ["clusters"])
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    ApiToken.issue(bob, "Bob's secret pipeline", ["read"])
    response = alice_client.get("/tokens/")
    states = {token.name: state for token, state in response.context["rows"]}
    assert states == {"Used": "Active", "Old": "Expired", "Gone": "Revoked"}
    html = response.content.decode()
    assert "from 192.0.2.7" in html and used.prefix in html
    assert "Bob's secret pipeline" not in html
    # Nothing to revoke on a revoked token.
    assert f"/tokens/{revoked.pk}/revoke/" not in html and f"/tokens/{used.pk}/revoke/" in html


def test_revoking_asks_first_and_ends_the_token(alice_client, alice):
    row, token = ApiToken.issue(alice, "CI", ["read"])
    confirm = alice_client.get(f"/tokens/{row.pk}/revoke/")
    assert confirm.status_code == 200 and b'id="confirm-revoke"' in confirm.content
    row.refresh_from_db()
    assert row.revoked_at is None
    response = alice_client.post(f"/tokens/{row.pk}/revoke/", follow=True)
    assert response.redirect_chain[-1][0] == "/tokens/"
    assert "Token “CI” revoked" in response.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert me(alice_client, token) == 401


def test_others_tokens_are_404(client, alice, bob, staff):
    row, token = ApiToken.issue(alice, "CI", ["read"])
    for user in (bob, staff):
        client.force_login(user)
        assert client.get(f"/tokens/{row.pk}/revoke/").status_code == 404
        assert client.post(f"/tokens/{row.pk}/revoke/").status_code == 404
    row.refresh_from_db()
    assert row.revoked_at is None and me(client, token) == 200


def test_the_page_needs_a_sign_in_and_runs_no_inline_script(client, alice):
    response = client.get("/tokens/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    client.force_login(alice)
    html = client.post("/tokens/", {"name": "CI", "scopes": ["read"]}).content.decode()
    assert TOKEN.search(html)
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert not re.search(r"\son[a-z]+=", html)
    assert "API tokens" in client.get("/").content.decode()  # in the menu


# --- The admin ---------------------------------------------------------------------------


def test_staff_list_search_and_filter_anyones_tokens_without_digests(client, staff, alice, bob):
    a, _ = ApiToken.issue(alice, "Alice CI", ["read"])
    b, _ = ApiToken.issue(bob, "Bob deploy", ["clusters"])
    ApiToken.objects.filter(pk=b.pk).update(revoked_at=timezone.now())
    client.force_login(staff)
    page = client.get("/admin/api/apitoken/")
    html = page.content.decode()
    assert page.status_code == 200 and "Alice CI" in html and "Bob deploy" in html
    assert a.digest not in html and b.digest not in html

    def listed(query):
        return {
            t.name for t in client.get(f"/admin/api/apitoken/?{query}").context["cl"].result_list
        }

    assert listed("q=bob@example.com") == {"Bob deploy"}
    assert listed("state=active") == {"Alice CI"}
    assert listed("state=revoked") == {"Bob deploy"}
    assert listed("scope=clusters") == {"Bob deploy"}
    change = client.get(f"/admin/api/apitoken/{a.pk}/change/").content.decode()
    assert a.digest not in change and 'name="name"' not in change  # read-only
    assert client.get("/admin/api/apitoken/add/").status_code == 403


def test_staff_revoke_tokens_with_the_admin_action(client, staff, alice):
    row, token = ApiToken.issue(alice, "CI", ["read"])
    client.force_login(staff)
    response = client.post(
        "/admin/api/apitoken/",
        {"action": "revoke", "_selected_action": [row.pk]},
        follow=True,
    )
    assert "Revoked 1 token(s)." in response.content.decode()
    row.refresh_from_db()
    assert row.revoked_at is not None and me(client, token) == 401
