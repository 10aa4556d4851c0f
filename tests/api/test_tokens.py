"""API tokens: hashed, scoped, expiring, revocable; every error is JSON with a code."""

from datetime import timedelta

import pytest
from django.utils import timezone

from api.models import ApiToken, digest

pytestmark = pytest.mark.django_db


def bearer(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_a_token_is_stored_hashed_and_shown_once(alice):
    row, token = ApiToken.issue(alice, "CI", ["read", "run"])
    assert token.startswith("pap_") and len(token) > 40
    assert row.digest == digest(token) and token not in row.digest
    assert row.prefix == token[:10] and row.scopes == ["read", "run"]
    with pytest.raises(ValueError):
        ApiToken.issue(alice, "bad", ["admin"])


def test_a_token_signs_in_and_records_its_use(client, alice):
    row, token = ApiToken.issue(alice, "CI", ["read"])
    response = client.get("/api/me/", **bearer(token), REMOTE_ADDR="127.0.0.7")
    assert response.status_code == 200
    assert response.json() == {
        "id": alice.pk,
        "email": alice.email,
        "is_staff": False,
        "scopes": ["read"],
    }
    row.refresh_from_db()
    assert row.last_used_at is not None and row.last_used_ip == "127.0.0.7"


@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": timezone.now()},
        {"expires_at": timezone.now() - timedelta(seconds=1)},
    ],
    ids=["revoked", "expired"],
)
def test_revoked_and_expired_tokens_are_401(client, alice, change):
    row, token = ApiToken.issue(alice, "CI", ["read"])
    ApiToken.objects.filter(pk=row.pk).update(**change)
    response = client.get("/api/me/", **bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_and_missing_tokens_are_401_in_json(client):
    assert client.get("/api/me/", **bearer("pap_nope")).json()["code"] == "invalid_token"
    response = client.get("/api/me/")
    assert response.status_code == 401
    assert response.json() == {
        "code": "not_authenticated",
        "detail": "Authentication credentials were not provided.",
    }


def test_a_missing_scope_is_403_naming_it(client, alice):
    _, token = ApiToken.issue(alice, "runner", ["run"])
    response = client.get("/api/me/", **bearer(token))
    assert response.status_code == 403
    assert response.json() == {
        "code": "missing_scope",
        "detail": "This token lacks the scope “read”.",
    }


def test_a_deactivated_users_token_stops_working(client, alice):
    _, token = ApiToken.issue(alice, "CI", ["read"])
    alice.is_active = False
    alice.save()
    assert client.get("/api/me/", **bearer(token)).status_code == 401


def test_the_schema_and_the_docs_are_served(client, alice):
    _, token = ApiToken.issue(alice, "CI", ["read"])
    schema = client.get("/api/schema/?format=json", **bearer(token))
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    client.force_login(alice)
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
