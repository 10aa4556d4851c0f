"""SSH keys: every bad key is refused with a clear message; good ones get a fingerprint."""

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from clusters import keys, services
from clusters.models import SSHKey

pytestmark = pytest.mark.django_db


def public_text(private, comment="alice@laptop") -> str:
    text = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{text} {comment}" if comment else text


def private_text(private) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def ed25519_key():
    return ed25519.Ed25519PrivateKey.generate()


def test_ed25519_key_is_parsed_with_its_sha256_fingerprint(ed25519_key):
    text = public_text(ed25519_key)
    parsed = keys.parse_public_key(text + "\n")
    blob = base64.b64decode(text.split()[1])
    assert parsed.fingerprint == "SHA256:" + base64.b64encode(
        hashlib.sha256(blob).digest()
    ).decode().rstrip("=")
    assert (parsed.key_type, parsed.bits, parsed.comment) == ("ssh-ed25519", 256, "alice@laptop")


@pytest.mark.parametrize(
    "factory",
    [
        lambda: rsa.generate_private_key(65537, 3072),
        lambda: ec.generate_private_key(ec.SECP256R1()),
    ],
)
def test_rsa_and_ecdsa_keys_are_accepted(factory):
    parsed = keys.parse_public_key(public_text(factory(), comment=""))
    assert parsed.bits in (3072, 256) and parsed.comment == ""


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: "", "Paste or upload"),
        (lambda k: "hello world", "not supported"),
        (lambda k: private_text(k), "PRIVATE key"),
        (lambda k: public_text(k)[:40], "does not decode"),
        (lambda k: "ssh-ed25519 !!!notbase64!!!", "does not decode"),
        (lambda k: public_text(k) + "\n" + public_text(k), "exactly one"),
        (lambda k: "x" * 200_000, "over 100 kB"),
        (lambda k: public_text(rsa.generate_private_key(65537, 1024)), "1024 bits; at least 2048"),
        (lambda k: public_text(dsa.generate_private_key(1024)), "not supported"),
        (lambda k: "ssh-ed25519-cert-v01@openssh.com AAAA", "not supported"),
    ],
)
def test_bad_keys_are_refused(ed25519_key, make, message):
    with pytest.raises(keys.SSHKeyError) as exc:
        keys.parse_public_key(make(ed25519_key))
    assert message in str(exc.value)


def test_a_duplicate_of_my_key_is_refused_but_another_user_may_add_it(alice, bob, ed25519_key):
    services.add_ssh_key(alice, "laptop", public_text(ed25519_key))
    with pytest.raises(keys.SSHKeyError, match="already added this key, as “laptop”"):
        services.add_ssh_key(alice, "again", public_text(ed25519_key, comment="other"))
    services.add_ssh_key(bob, "", public_text(ed25519_key))
    assert SSHKey.objects.get(owner=bob).title == "alice@laptop"


def test_add_key_by_paste_and_by_upload(alice_client, alice, ed25519_key):
    response = alice_client.post(
        reverse("keys-new"), {"title": "laptop", "key": public_text(ed25519_key)}
    )
    assert response.status_code == 302
    other = ec.generate_private_key(ec.SECP384R1())
    upload = SimpleUploadedFile("id_ecdsa.pub", public_text(other).encode())
    assert (
        alice_client.post(reverse("keys-new"), {"title": "", "key_file": upload}).status_code == 302
    )
    page = alice_client.get(reverse("keys-list")).content.decode()
    assert SSHKey.objects.filter(owner=alice).count() == 2 and "SHA256:" in page


def test_pasting_a_private_key_stores_nothing_and_does_not_echo_it(alice_client, ed25519_key):
    pasted = private_text(ed25519_key)
    response = alice_client.post(reverse("keys-new"), {"title": "oops", "key": pasted})
    page = response.content.decode()
    assert response.status_code == 200 and "PRIVATE key" in page
    assert "PRIVATE KEY-----" not in page and pasted.splitlines()[1] not in page, (
        "the private key came back in the form"
    )
    assert not SSHKey.objects.exists()
    ppk = (
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: me\n"
        "Public-Lines: 2\nAAAA\nBBBB\nPrivate-Lines: 1\nSECRETLINE\nPrivate-MAC: 00"
    )
    page = alice_client.post(reverse("keys-new"), {"title": "ppk", "key": ppk}).content.decode()
    assert "PRIVATE key" in page and "SECRETLINE" not in page


def test_delete_my_key_only(alice_client, bob, ed25519_key):
    key = services.add_ssh_key(bob, "bob", public_text(ed25519_key))
    assert alice_client.post(reverse("keys-delete", args=[key.pk])).status_code == 404
    assert SSHKey.objects.filter(pk=key.pk).exists()
