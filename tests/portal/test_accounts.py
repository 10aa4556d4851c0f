"""Sign-in: password accounts, closed sign-up, domain allow-list, an OIDC provider by settings."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_everything_but_sign_in_needs_a_user(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    assert client.get(reverse("account_login")).status_code == 200


def test_sign_in_with_email_and_password(client, alice):
    response = client.post(
        reverse("account_login"), {"login": "alice@example.com", "password": "alice-password-1"}
    )
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200


def test_wrong_password_is_refused(client, alice):
    response = client.post(
        reverse("account_login"), {"login": "alice@example.com", "password": "nope"}
    )
    assert response.status_code == 200
    assert client.get(reverse("dashboard")).status_code == 302


def test_sign_up_creates_an_account(client, django_user_model):
    response = client.post(
        reverse("account_signup"),
        {
            "email": "new@example.org",
            "password1": "a-long-passphrase-9",
            "password2": "a-long-passphrase-9",
        },
    )
    assert response.status_code == 302
    assert django_user_model.objects.filter(email="new@example.org").exists()


def test_sign_up_can_be_limited_to_domains(client, settings, django_user_model):
    settings.SIGNUP_ALLOWED_DOMAINS = ["mozilla.com"]
    response = client.post(
        reverse("account_signup"),
        {
            "email": "x@gmail.com",
            "password1": "a-long-passphrase-9",
            "password2": "a-long-passphrase-9",
        },
    )
    assert (
        response.status_code == 200
        and "limited to addresses in: mozilla.com" in response.content.decode()
    )
    assert not django_user_model.objects.filter(email="x@gmail.com").exists()


def test_sign_up_can_be_closed(client, settings):
    settings.SIGNUP_OPEN = False
    response = client.get(reverse("account_signup"))
    assert "closed" in response.content.decode().lower()


def test_an_openid_connect_provider_is_offered_when_configured(client, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "corp",
                    "name": "Corp SSO",
                    "client_id": "id",
                    "secret": "s",
                    "settings": {"server_url": "https://sso.example.com"},
                }
            ]
        }
    }
    html = client.get(reverse("account_login")).content.decode()
    assert "Corp SSO" in html


def test_an_unverified_address_cannot_use_the_portal_until_its_link_is_followed(
    client, django_user_model
):
    from django.core import mail

    client.post(
        reverse("account_signup"),
        {
            "email": "new@example.org",
            "password1": "a-long-passphrase-9",
            "password2": "a-long-passphrase-9",
        },
    )
    assert client.get(reverse("dashboard")).status_code == 302  # signed up, not signed in
    signed_in = client.post(
        reverse("account_login"), {"login": "new@example.org", "password": "a-long-passphrase-9"}
    )
    assert signed_in.status_code == 302 and "confirm-email" in signed_in["Location"]
    assert client.get(reverse("dashboard")).status_code == 302
    link = next(
        line
        for m in mail.outbox
        for line in m.body.splitlines()
        if "/accounts/confirm-email/" in line
    ).strip()
    client.post(link[link.index("/accounts/") :])
    assert (
        client.post(
            reverse("account_login"),
            {"login": "new@example.org", "password": "a-long-passphrase-9"},
        ).status_code
        == 302
    )
    assert client.get(reverse("dashboard")).status_code == 200


def test_verification_is_mandatory_whenever_anyone_may_sign_up():
    """Settings are read once per process: each case starts Django in a process of its
    own, all four at once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent.parent
    probe = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.ACCOUNT_EMAIL_VERIFICATION)"
    )
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SIGNUP_ALLOWED_DOMAINS", "ACCOUNT_EMAIL_VERIFICATION")
    }
    cases = (
        ({"SIGNUP_OPEN": "true"}, "mandatory"),
        ({"SIGNUP_OPEN": "false", "SIGNUP_ALLOWED_DOMAINS": "corp.example"}, "mandatory"),
        ({"SIGNUP_OPEN": "false", "ACCOUNT_EMAIL_VERIFICATION": "none"}, "none"),
        ({"SIGNUP_OPEN": "true", "ACCOUNT_EMAIL_VERIFICATION": "none"}, "mandatory"),
    )
    probes = [
        subprocess.Popen(
            [sys.executable, "-c", probe],
            cwd=root,
            env={**base, **env, "DJANGO_SETTINGS_MODULE": "portal.settings"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env, _ in cases
    ]
    for (env, expected), proc in zip(cases, probes, strict=True):
        out, err = proc.communicate(timeout=60)
        assert out.strip() == expected, (env, err[-500:])


def test_admin_sign_in_goes_through_the_rate_limited_portal_sign_in(client, staff):
    response = client.get("/admin/login/?next=/admin/jobs/job/")
    assert (
        response.status_code == 302
        and response["Location"] == f"{reverse('account_login')}?next=/admin/jobs/job/"
    )
    # Posting credentials to the admin's form signs nobody in.
    client.post("/admin/login/", {"username": "staff", "password": "staff-password-1"})
    assert client.get("/admin/").status_code == 302
    # Failed sign-ins for one address are counted in the shared cache and then refused,
    # the right password included.
    for _ in range(5):
        client.post(reverse("account_login"), {"login": "staff@example.com", "password": "wrong"})
    refused = client.post(
        reverse("account_login"), {"login": "staff@example.com", "password": "staff-password-1"}
    )
    assert refused.status_code in (200, 429) and "Too many failed" in refused.content.decode()
    assert client.get("/admin/").status_code == 302


@pytest.mark.redis
def test_rate_limit_counters_live_in_redis(client, staff, settings):
    import redis

    for _ in range(2):
        client.post(reverse("account_login"), {"login": "staff@example.com", "password": "wrong"})
    keys = list(redis.Redis.from_url(settings.REDIS_URL).scan_iter(match="*allauth*rl*"))
    assert keys, "allauth's rate-limit counters are not in Redis"


class _Login:
    """Just enough of allauth's SocialLogin for the sign-in policy."""

    def __init__(self, claims, email=None):
        from types import SimpleNamespace

        self.account = SimpleNamespace(extra_data={"userinfo": claims})
        self.user = SimpleNamespace(email=email if email is not None else claims.get("email"))


def test_openid_connect_needs_a_verified_address_and_honours_the_sign_up_policy(rf, settings):
    from allauth.core.exceptions import ImmediateHttpResponse

    from portal.accounts import SocialAccountAdapter, oidc_refusal

    assert "not verified" in oidc_refusal(
        _Login({"email": "a@corp.example", "email_verified": False})
    )
    assert "not verified" in oidc_refusal(_Login({"email": "a@corp.example"}))
    assert oidc_refusal(_Login({"email": "a@corp.example", "email_verified": True})) == ""
    settings.SIGNUP_ALLOWED_DOMAINS = ["corp.example"]
    assert "limited to addresses" in oidc_refusal(
        _Login({"email": "a@gmail.com", "email_verified": True})
    )
    google = {
        "iss": "https://accounts.google.com",
        "email": "a@corp.example",
        "email_verified": True,
    }
    assert "Google Workspace" in oidc_refusal(_Login(google))  # no hd: a consumer account
    assert "Google Workspace" in oidc_refusal(_Login({**google, "hd": "other.example"}))
    assert oidc_refusal(_Login({**google, "hd": "corp.example"})) == ""

    adapter = SocialAccountAdapter()
    request = rf.get("/accounts/oidc/login/callback/")
    with pytest.raises(ImmediateHttpResponse) as refused:
        adapter.pre_social_login(
            request, _Login({"email": "a@corp.example", "email_verified": False})
        )
    assert refused.value.response.status_code == 403
    settings.SIGNUP_OPEN = False
    assert not adapter.is_open_for_signup(
        request, _Login({"email": "a@corp.example", "email_verified": True})
    )
    settings.SIGNUP_OPEN = True
    assert adapter.is_open_for_signup(
        request, _Login({"email": "a@corp.example", "email_verified": True})
    )
