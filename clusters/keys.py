"""Parsing and checking SSH public keys pasted or uploaded by users.

Parsed with ``cryptography``'s ``load_ssh_public_key`` (sshpubkeys is unmaintained and
accepts 1024-bit RSA). The fingerprint is OpenSSH's SHA256 form: base64 of the SHA-256 of
the key blob, without padding, as ``ssh-keygen -l`` prints it.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

#: Largest key text accepted, in bytes.
MAX_KEY_BYTES = 100 * 1024
#: Smallest RSA modulus accepted, in bits.
MIN_RSA_BITS = 2048
SUPPORTED = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


class SSHKeyError(ValueError):
    """A text that is not an acceptable SSH public key; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    """A parsed key: canonical one-line text, type, size in bits, fingerprint, comment."""

    text: str
    key_type: str
    bits: int
    fingerprint: str
    comment: str


def looks_private(text: str) -> bool:
    """True for the text of a private key: PEM or OpenSSH ("-----BEGIN ... PRIVATE
    KEY-----") or PuTTY (.ppk: "PuTTY-User-Key-File-N", "Private-Lines")."""
    return "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text or "Private-Lines:" in text


def parse_public_key(raw: str) -> PublicKey:
    """Parse one OpenSSH public key line; raises SSHKeyError with a message for people.

    Refuses: empty text, more than 100 kB, private keys (any PEM/OpenSSH private block),
    more than one key, unsupported types (DSA, certificates, security-key types), RSA
    under 2048 bits, and anything that does not decode.
    """
    if raw is None or not raw.strip():
        raise SSHKeyError("Paste or upload a public key (the contents of a .pub file).")
    if len(raw.encode("utf-8", "replace")) > MAX_KEY_BYTES:
        raise SSHKeyError("That is over 100 kB: a public key is one short line.")
    text = raw.strip()
    if looks_private(text):
        raise SSHKeyError(
            "This is a PRIVATE key. Never share it: paste the .pub file (the public key) "
            "instead, and consider this private key exposed."
        )
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SSHKeyError(
            "Paste exactly one public key (one line, e.g. from ~/.ssh/id_ed25519.pub)."
        )
    parts = lines[0].split(None, 2)
    if len(parts) < 2:
        raise SSHKeyError(
            "This does not look like an OpenSSH public key (expected: type, key, optional comment)."
        )
    key_type, blob_b64 = parts[0], parts[1]
    comment = parts[2].strip() if len(parts) == 3 else ""
    if key_type not in SUPPORTED:
        raise SSHKeyError(
            f"Keys of type {key_type!r} are not supported; use one of: {', '.join(SUPPORTED)}."
        )
    try:
        blob = base64.b64decode(blob_b64, validate=True)
        key = load_ssh_public_key(f"{key_type} {blob_b64}".encode())
    except (ValueError, TypeError, binascii.Error):
        raise SSHKeyError(
            "The key does not decode: it may be cut short or contain extra characters."
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise SSHKeyError(
                f"This RSA key has {bits} bits; at least {MIN_RSA_BITS} are required."
            )
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
    elif isinstance(key, ed25519.Ed25519PublicKey):
        bits = 256
    else:  # pragma: no cover - SUPPORTED already limits the types
        raise SSHKeyError("Unsupported key type.")
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    canonical = f"{key_type} {blob_b64}" + (f" {comment}" if comment else "")
    return PublicKey(
        text=canonical,
        key_type=key_type,
        bits=bits,
        fingerprint=f"SHA256:{digest}",
        comment=comment[:200],
    )
