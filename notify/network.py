"""Outbound HTTP of notifications, kept out of the portal's own networks.

A webhook or Apprise URL is user input that makes the portal send requests: aimed at
loopback, a private network or the cloud metadata address (169.254.169.254) it would be a
server-side request forgery. So every address a URL's host resolves to must be global
(``ipaddress``'s ``is_global``: not loopback, private, link-local, shared, reserved or
multicast) or inside NOTIFY_ALLOWED_NETWORKS. URLs are checked when a target is saved and
again at each delivery, on the very addresses the connection then uses, so a name that
resolves elsewhere by delivery time (DNS rebinding) is refused too:

- webhooks (httpx) connect to the checked IP address itself, with the name in the Host
  header and in TLS (SNI and certificate checks); redirects are not followed;
- Apprise (requests, hence urllib3) sends inside ``guarded_connections()``, which checks
  the address of every connection urllib3 opens in that thread, redirects included, and
  connects to that checked address.
"""

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedAddress(OSError):
    """A host that resolves to an address notifications may not reach. An OSError, so that
    urllib3 reports it as a failed connection when raised inside one."""


class Unresolvable(OSError):
    """A host that does not resolve (now): worth retrying later."""


def allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """NOTIFY_ALLOWED_NETWORKS as networks (settings checked them at start)."""
    return [ipaddress.ip_network(n, strict=False) for n in settings.NOTIFY_ALLOWED_NETWORKS]


def _plain(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (::ffff:10.0.0.1) as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def refusal(address: str) -> str | None:
    """Why notifications may not reach ``address`` (an IP address string), or None if they
    may: global addresses, and any address inside NOTIFY_ALLOWED_NETWORKS."""
    ip = _plain(ipaddress.ip_address(address.split("%")[0]))
    if any(ip in network for network in allowed_networks()):
        return None
    if ip.is_global:
        return None
    if ip.is_loopback:
        what = "a loopback address"
    elif ip.is_link_local:
        what = "a link-local address"
    elif ip.is_private:
        what = "a private address"
    else:
        what = "not a public address"
    return f"{address} is {what}"


def checked_addresses(host: str, port: int) -> list[str]:
    """Resolve ``host`` and return its IP addresses (strings, in resolver order), once
    every one of them passes ``refusal``: a client may pick any, so one refused address
    refuses the host. Raises Unresolvable or RefusedAddress (message names the host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(f"{host} does not resolve ({exc})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise Unresolvable(f"{host} does not resolve")
    for address in addresses:
        reason = refusal(address)
        if reason is not None:
            raise RefusedAddress(
                f"{host} resolves to {reason}: notifications are not sent inside the "
                "portal's own networks"
            )
    return addresses


def check_host(host: str | None, port: int | None, secure: bool) -> None:
    """``checked_addresses`` for a URL's host and port (default 443 or 80); a URL without
    a host raises RefusedAddress."""
    if not host:
        raise RefusedAddress("the URL names no host")
    checked_addresses(host, port or (443 if secure else 80))


def check_webhook_url(url: str) -> None:
    """Raise ValueError (a message for people) unless ``url`` is an http(s) URL without
    user name or password whose host passes ``checked_addresses``; Unresolvable and
    RefusedAddress are ValueErrors' siblings (OSError) and pass through."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("A webhook URL starts with https:// (or http://).")
    if parts.username or parts.password:
        raise ValueError(
            "Leave the user name and password out of the URL: receivers check the "
            "X-Portal-Signature instead."
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("The URL's port is not a number from 1 to 65535.") from None
    check_host(parts.hostname, port, parts.scheme == "https")


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> httpx.Response:
    """POST ``body`` (JSON bytes) to ``url`` and return the response, without following
    redirects and without proxies from the environment.

    The connection goes to the first address ``checked_addresses`` approved, with the
    URL's host in the Host header and as the TLS server name (so certificates are checked
    against the name, not the address). ``timeout`` is in seconds, for each of connect,
    write and read. Raises ValueError or OSError from ``check_webhook_url``, and
    ``httpx.HTTPError`` for transport failures.
    """
    check_webhook_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    address = checked_addresses(host, port)[0]
    literal = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
    default_port = port == (443 if secure else 80)
    name = f"[{host}]" if ":" in host else host
    headers = {**headers, "Host": name if default_port else f"{name}:{port}"}
    extensions = {"sni_hostname": host} if secure else {}
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout) as client:
        return client.post(pinned, content=body, headers=headers, extensions=extensions)


_guarding: ContextVar[bool] = ContextVar("notify_guarding", default=False)


def _install_urllib3_guard() -> None:
    """Wrap ``urllib3.util.connection.create_connection`` (what every urllib3 connection,
    hence requests and Apprise, opens its socket with) once per process: inside
    ``guarded_connections`` it connects only to an address ``checked_addresses`` approved;
    elsewhere it is unchanged."""
    from urllib3.util import connection

    original = connection.create_connection
    if getattr(original, "portal_guard", False):
        return

    def create_connection(address, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _guarding.get():
            host, port = address
            address = (checked_addresses(host.strip("[]"), port)[0], port)
        return original(address, *args, **kwargs)

    create_connection.portal_guard = True  # type: ignore[attr-defined]
    connection.create_connection = create_connection


@contextmanager
def guarded_connections() -> Iterator[None]:
    """Within the block, connections urllib3 opens in this thread (or task) are checked
    as ``checked_addresses`` says; a refused one fails as a connection error."""
    _install_urllib3_guard()
    token = _guarding.set(True)
    try:
        yield
    finally:
        _guarding.reset(token)
