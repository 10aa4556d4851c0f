"""API tokens in the browser: a user makes a token on the API tokens page, sees it once and
copies it, a script uses it against the live portal's API, and once revoked on the page
the same token gets 401; all under the portal's CSP."""

import httpx
import pytest
from playwright.sync_api import expect

from api.models import ApiToken, digest
from tests.e2e.conftest import login

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_make_use_and_revoke_a_token(page, context, portal, alice):
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=portal.url)
    login(page, portal, "alice")

    # Make it from the menu: a name, two scopes, an expiry.
    page.click("nav >> text=API tokens")
    page.fill("#id_name", "CI pipeline")
    page.check("input[name=scopes][value=run]")  # "read" is checked already
    page.fill("#id_expires_in_days", "7")
    with page.expect_navigation():
        page.click("#create-token")
    token = page.inner_text("#new-token-value").strip()
    assert token.startswith("pap_")
    row = ApiToken.objects.get(user=alice)
    assert row.digest == digest(token) and row.scopes == ["read", "run"]

    # The Copy button (a static script: no inline script under the CSP).
    page.click("#copy-token")
    expect(page.locator("#copy-token")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == token

    # Shown once: the list has its prefix and use, never the token again.
    page.goto(f"{portal.url}/tokens/")
    expect(page.locator(f"#token-{row.pk}")).to_contain_text(row.prefix)
    assert token not in page.content()

    # A script uses it; the page then shows when and from where.
    with httpx.Client(base_url=portal.url, trust_env=False, timeout=30) as api:
        headers = {"Authorization": f"Bearer {token}"}
        me = api.get("/api/me/", headers=headers)
        assert me.status_code == 200, me.text
        assert me.json()["email"] == alice.email and me.json()["scopes"] == ["read", "run"]
        page.reload()
        expect(page.locator(f"#token-{row.pk}")).to_contain_text("from 127.0.0.1")
        expect(page.locator(f"#token-{row.pk} .token-state")).to_have_text("Active")

        # Revoke it on the page, after a confirmation: the next request is a 401.
        page.click(f"#token-{row.pk} >> text=Revoke…")
        with page.expect_navigation():
            page.click("#confirm-revoke")
        expect(page.locator("main")).to_contain_text("Token “CI pipeline” revoked")
        expect(page.locator(f"#token-{row.pk} .token-state")).to_have_text("Revoked")
        refused = api.get("/api/me/", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_token"

    broken = [c for c in console if c.startswith("pageerror") or "Content Security" in c]
    assert broken == [], broken
