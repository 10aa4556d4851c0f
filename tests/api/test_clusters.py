"""Clusters and SSH keys through the API: the launch form's checks and messages, the
services' limits as JSON errors, others' objects 404, and a cluster's Spark Connect token
only ever to its owner."""

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from api.models import ApiToken
from clusters import services
from clusters.models import Cluster, SSHKey
from clusters.services import ClusterSpec

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def api(client):
    """``api(method, path, user, scopes, json=None)``: a request with a fresh token of
    ``user`` holding ``scopes``; returns the response."""

    def call(method, path, user, scopes=("read", "clusters"), json=None):
        _, token = ApiToken.issue(user, "test", list(scopes))
        send = getattr(client, method)
        if json is None:
            return send(path, **bearer(token))
        return send(path, json, content_type="application/json", **bearer(token))

    return call


def public_key(comment="alice@laptop") -> str:
    text = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{text} {comment}"


def launch(user, name="one", **fields) -> Cluster:
    return services.launch_cluster(user, ClusterSpec(name=name, **fields))


def make_ready(cluster: Cluster) -> Cluster:
    Cluster.objects.filter(pk=cluster.pk).update(
        state=Cluster.State.READY,
        master_url="spark://127.0.0.1:7077",
        ui_url="http://127.0.0.1:8080",
        connect_url="sc://127.0.0.1:15002",
    )
    cluster.refresh_from_db()
    return cluster


# --- Launch ---------------------------------------------------------------------------------


def test_a_launch_makes_a_pending_cluster_with_the_forms_defaults(api, alice, settings):
    response = api("post", "/api/clusters/", alice, json={"size": 2})
    assert response.status_code == 201, response.json()
    body = response.json()
    cluster = Cluster.objects.get(pk=body["id"])
    assert cluster.owner == alice and cluster.size == 2 and cluster.backend == "local"
    assert cluster.lifetime_hours == settings.CLUSTER_DEFAULT_LIFETIME_HOURS
    assert body["name"] == cluster.name != ""
    assert body["state"] == "PENDING" and body["access"] is None


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"size": 5}, "non_field_errors", "A cluster has 1 to 4 workers."),
        ({"size": 0}, "size", "Ensure this value is greater than or equal to 1."),
        ({"name": "no spaces"}, "name", "Enter a valid “slug”"),
        ({"backend": "emr"}, "backend", "Select a valid choice. emr is not one of"),
        ({"lifetime_hours": 25}, "non_field_errors", "A cluster lives 1 to 24 hours"),
    ],
)
def test_a_launch_is_refused_with_the_pages_messages(api, alice, payload, field, message):
    response = api("post", "/api/clusters/", alice, json=payload)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and message in body["errors"][field][0]
    assert message in body["detail"]
    assert not Cluster.objects.exists()


def test_an_emr_launch_needs_a_key_of_ones_own(api, alice, bob, settings):
    settings.CLUSTER_BACKENDS = ["local", "emr"]
    response = api("post", "/api/clusters/", alice, json={"backend": "emr"})
    assert response.json()["errors"]["ssh_key"] == ["EMR clusters need an SSH key."]
    bobs = services.add_ssh_key(bob, "bob's", public_key("bob@laptop"))
    response = api("post", "/api/clusters/", alice, json={"backend": "emr", "ssh_key": bobs.pk})
    assert response.status_code == 400
    assert "not one of the available choices" in response.json()["errors"]["ssh_key"][0]
    assert not Cluster.objects.exists()


def test_a_name_in_use_is_invalid(api, alice):
    launch(alice, "one")
    response = api("post", "/api/clusters/", alice, json={"name": "one"})
    assert response.status_code == 400
    assert response.json()["detail"] == "You already have a live cluster named “one”."


def test_the_per_user_cap_and_the_budget_are_limits(api, alice, settings):
    launch(alice, "one")
    launch(alice, "two")
    response = api("post", "/api/clusters/", alice, json={"name": "three"})
    assert response.status_code == 403
    assert response.json() == {
        "code": "limit_exceeded",
        "detail": "You already have 2 live local clusters (with those started for your "
        "runs): terminate one first.",
    }
    Cluster.objects.update(state=Cluster.State.TERMINATED)
    settings.USER_MONTHLY_NODE_HOURS = 4
    response = api("post", "/api/clusters/", alice, json={"name": "four", "lifetime_hours": 8})
    assert response.status_code == 403 and response.json()["code"] == "limit_exceeded"
    assert response.json()["detail"].startswith("This needs about 8.0 node-hours")


def test_a_token_without_the_clusters_scope_cannot_launch(api, alice):
    response = api("post", "/api/clusters/", alice, scopes=["read"], json={})
    assert response.status_code == 403
    assert response.json()["detail"] == "This token lacks the scope “clusters”."
    assert not Cluster.objects.exists()


# --- Reading -------------------------------------------------------------------------------


def test_the_list_holds_ones_own_clusters_and_staff_see_all(api, alice, bob, staff):
    mine, theirs = launch(alice, "mine"), launch(bob, "theirs")
    assert [c["id"] for c in api("get", "/api/clusters/", alice).json()] == [mine.pk]
    assert [c["id"] for c in api("get", "/api/clusters/", bob).json()] == [theirs.pk]
    assert {c["id"] for c in api("get", "/api/clusters/", staff).json()} == {mine.pk, theirs.pk}


def test_others_clusters_and_keys_are_404(api, alice, bob, staff):
    cluster = launch(alice)
    key = services.add_ssh_key(alice, "laptop", public_key())
    for method, path, json in [
        ("get", f"/api/clusters/{cluster.pk}/", None),
        ("post", f"/api/clusters/{cluster.pk}/extend/", {"hours": 1}),
        ("post", f"/api/clusters/{cluster.pk}/terminate/", {}),
        ("get", f"/api/keys/{key.pk}/", None),
        ("delete", f"/api/keys/{key.pk}/", None),
    ]:
        response = api(method, path, bob, json=json)
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), path
    cluster.refresh_from_db()
    assert cluster.state == Cluster.State.PENDING and cluster.extension_count == 0
    assert SSHKey.objects.filter(pk=key.pk).exists()
    # Staff see every cluster, but SSH keys only in the admin (as on the pages).
    assert api("get", f"/api/clusters/{cluster.pk}/", staff).status_code == 200
    assert api("get", f"/api/keys/{key.pk}/", staff).status_code == 404


def test_addresses_appear_once_ready_and_the_connect_token_only_to_its_owner(api, alice, staff):
    cluster = launch(alice)
    path = f"/api/clusters/{cluster.pk}/"
    assert api("get", path, alice).json()["access"] is None
    make_ready(cluster)
    access = api("get", path, alice).json()["access"]
    assert access["connect_url"] == "sc://127.0.0.1:15002"
    assert access["master_url"] == "spark://127.0.0.1:7077"
    assert access["connect_token"] == cluster.connect_token
    # Not to staff, and not to a token that may only read: the token runs code.
    for user, scopes in [(staff, ["read", "clusters"]), (alice, ["read"])]:
        response = api("get", path, user, scopes=scopes)
        assert response.json()["access"]["connect_token"] is None
        assert cluster.connect_token not in response.content.decode()
    listed = api("get", "/api/clusters/", staff).content.decode()
    assert "sc://127.0.0.1:15002" in listed and cluster.connect_token not in listed


# --- Extend and terminate ---------------------------------------------------------------------


def test_extend_pushes_the_expiry_back(api, alice):
    cluster = launch(alice)
    response = api("post", f"/api/clusters/{cluster.pk}/extend/", alice, json={"hours": 2})
    assert response.status_code == 200, response.json()
    after = Cluster.objects.get(pk=cluster.pk)
    assert after.expires_at == cluster.expires_at + timedelta(hours=2)
    assert response.json()["extension_count"] == 1


@pytest.mark.parametrize(
    ("hours", "errors"),
    [
        (0, {"hours": ["Enter a whole number of hours, 1 to 8."]}),
        ("two", {"hours": ["Enter a whole number of hours, 1 to 8."]}),
        (None, {"hours": ["Enter a whole number of hours, 1 to 8."]}),
        (9, {"non_field_errors": ["Extend by 1 to 8 hours."]}),
    ],
)
def test_extend_refuses_bad_hours_with_the_pages_messages(api, alice, hours, errors):
    cluster = launch(alice)
    payload = {} if hours is None else {"hours": hours}
    response = api("post", f"/api/clusters/{cluster.pk}/extend/", alice, json=payload)
    assert response.status_code == 400
    assert response.json()["errors"] == errors
    assert Cluster.objects.get(pk=cluster.pk).expires_at == cluster.expires_at


def test_extend_past_the_total_lifetime_is_invalid_and_an_ended_cluster_conflicts(api, alice):
    cluster = launch(alice, lifetime_hours=20)
    response = api("post", f"/api/clusters/{cluster.pk}/extend/", alice, json={"hours": 8})
    assert response.status_code == 400
    assert response.json()["detail"] == "A cluster lives at most 24 hours in all."
    Cluster.objects.filter(pk=cluster.pk).update(state=Cluster.State.TERMINATED)
    response = api("post", f"/api/clusters/{cluster.pk}/extend/", alice, json={"hours": 1})
    assert response.status_code == 409
    assert response.json() == {"code": "conflict", "detail": "Only a live cluster can be extended."}


def test_terminate_asks_the_worker_to_stop_it(api, alice, django_capture_on_commit_callbacks):
    cluster = launch(alice)
    with django_capture_on_commit_callbacks() as enqueued:
        response = api("post", f"/api/clusters/{cluster.pk}/terminate/", alice, json={})
    assert response.status_code == 202
    assert response.json()["state"] == "TERMINATING" and len(enqueued) == 1
    assert Cluster.objects.get(pk=cluster.pk).state_reason == "Terminated by its owner."
    # Again: nothing more happens.
    with django_capture_on_commit_callbacks() as enqueued:
        again = api("post", f"/api/clusters/{cluster.pk}/terminate/", alice, json={})
    assert again.status_code == 202 and enqueued == []


# --- SSH keys ------------------------------------------------------------------------------


def test_keys_are_added_listed_and_deleted(api, alice, bob):
    text = public_key()
    response = api("post", "/api/keys/", alice, json={"title": "", "key": text})
    assert response.status_code == 201, response.json()
    body = response.json()
    key = SSHKey.objects.get(pk=body["id"])
    assert key.owner == alice and body["title"] == "alice@laptop"
    assert body["fingerprint"].startswith("SHA256:") and body["key_type"] == "ssh-ed25519"
    services.add_ssh_key(bob, "bob's", public_key("bob@laptop"))
    assert [k["id"] for k in api("get", "/api/keys/", alice).json()] == [key.pk]
    again = api("post", "/api/keys/", alice, json={"title": "again", "key": text})
    assert again.json()["errors"] == {"key": ["You already added this key, as “alice@laptop”."]}
    assert api("delete", f"/api/keys/{key.pk}/", alice).status_code == 204
    assert not SSHKey.objects.filter(owner=alice).exists()


def test_a_private_key_is_refused_and_never_echoed(api, alice):
    private = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )
    response = api("post", "/api/keys/", alice, json={"title": "oops", "key": private})
    assert response.status_code == 400
    assert response.json()["errors"]["key"] == [
        "This is a PRIVATE key. Never share it: paste the .pub file (the public key) "
        "instead, and consider this private key exposed."
    ]
    body = response.content.decode()
    assert private.splitlines()[1] not in body
    assert not SSHKey.objects.exists()


def test_adding_or_deleting_a_key_needs_the_clusters_scope(api, alice):
    key = services.add_ssh_key(alice, "laptop", public_key())
    response = api("post", "/api/keys/", alice, scopes=["read"], json={"key": public_key()})
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    response = api("delete", f"/api/keys/{key.pk}/", alice, scopes=["read", "run", "jobs"])
    assert response.status_code == 403 and "clusters" in response.json()["detail"]
    assert SSHKey.objects.count() == 1
