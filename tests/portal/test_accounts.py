"""Sign-in: password accounts, closed sign-up, domain allow-list, an OIDC provider by settings."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_everything_but_sign_in_needs_a_user(client):
    response = client.get(reverse("dashboard"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    assert client.get(reverse("account_login")).status_code == 200


def test_sign_in_with_email_and_password(client, alice):
    response = client.post(reverse("account_login"), {"login": "alice@example.com", "password": "alice-password-1"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard")).status_code == 200


def test_wrong_password_is_refused(client, alice):
    response = client.post(reverse("account_login"), {"login": "alice@example.com", "password": "nope"})
    assert response.status_code == 200
    assert client.get(reverse("dashboard")).status_code == 302


def test_sign_up_creates_an_account(client, django_user_model):
    response = client.post(reverse("account_signup"), {"email": "new@example.org", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"})
    assert response.status_code == 302
    assert django_user_model.objects.filter(email="new@example.org").exists()


def test_sign_up_can_be_limited_to_domains(client, settings, django_user_model):
    settings.SIGNUP_ALLOWED_DOMAINS = ["mozilla.com"]
    response = client.post(reverse("account_signup"), {"email": "x@gmail.com", "password1": "a-long-passphrase-9", "password2": "a-long-passphrase-9"})
    assert response.status_code == 200 and "limited to addresses in: mozilla.com" in response.content.decode()
    assert not django_user_model.objects.filter(email="x@gmail.com").exists()


def test_sign_up_can_be_closed(client, settings):
    settings.SIGNUP_OPEN = False
    response = client.get(reverse("account_signup"))
    assert "closed" in response.content.decode().lower()


def test_an_openid_connect_provider_is_offered_when_configured(client, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {"APPS": [{"provider_id": "corp", "name": "Corp SSO", "client_id": "id", "secret": "s",
                                     "settings": {"server_url": "https://sso.example.com"}}]}
    }
    html = client.get(reverse("account_login")).content.decode()
    assert "Corp SSO" in html
