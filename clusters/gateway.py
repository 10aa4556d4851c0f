"""The Spark Connect gateway: each READY local cluster's Spark Connect endpoint, reachable
from anywhere the user can reach the portal, over TLS, with a token of the cluster's own.

The gateway is nginx (Debian package), configured and supervised by this module
(``bin/gateway`` runs ``main``): one TLS listener on ``SPARK_CONNECT_GATEWAY_BIND``:
``SPARK_CONNECT_GATEWAY_PORT``, HTTP/2, ``grpc_pass`` to the cluster's Connect server on
loopback. A request is routed by its ``authorization: Bearer <token>`` header alone,
through an nginx ``map`` this module generates (``render_routes``) from the READY local
clusters, rewritten and reloaded when they change (every
``SPARK_CONNECT_GATEWAY_REFRESH`` seconds):

- a request whose token is no READY cluster's gateway token is answered with gRPC status
  UNAUTHENTICATED (16, in a headers-only response); no token is the same; plain TCP (no
  TLS) is refused by the TLS listener;
- the outside token (``gateway_token``) is not the token the Connect server requires
  (``Cluster.connect_token``, which the cluster's runs use on loopback): the gateway
  replaces the header with the server's token on the way in. A token seen outside the
  portal host therefore never opens the Connect server directly, and rotating it
  (``clusters.services.rotate_connect_token``) needs no restart of the cluster: the
  gateway refuses the old token from its next refresh, while the cluster's runs go on;
- a cluster that terminates leaves the map at the next refresh; its open sessions end
  when its Connect server dies.

Certificates: ``GATEWAY_TLS_CERT`` and ``GATEWAY_TLS_KEY`` in production; otherwise a
self-signed certificate generated under ``PORTAL_DATA_DIR/gateway/tls`` for
``SPARK_CONNECT_GATEWAY_HOST`` (by default the host of ``PORTAL_ORIGIN``) and localhost,
whose SHA-256 fingerprint the cluster page shows. gRPC clients trust it through
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (``portalctl clusters connect`` prints it).

The generated files hold tokens: they live in a 0700 directory, each file 0600, under
``PORTAL_DATA_DIR``, which no sandbox sees.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.crypto import salted_hmac

if TYPE_CHECKING:
    from clusters.models import Cluster

log = logging.getLogger(__name__)

#: Characters a token may have in the generated nginx map (base64url, as both kinds of
#: token are): anything else is refused rather than quoted.
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,128}$")
#: How long a self-signed certificate is valid, and how long before its end it is renewed.
SELF_SIGNED_DAYS = 365
RENEW_BEFORE_DAYS = 30


class GatewayError(RuntimeError):
    """The gateway cannot start: nginx missing, a certificate that cannot be read or made."""


# --- Tokens and connection strings ---------------------------------------------------------


def generation(cluster: Cluster) -> int:
    """How many times the cluster's gateway token was rotated (0 at first)."""
    return int((cluster.backend_info or {}).get("gateway_generation", 0))


def gateway_token(cluster: Cluster) -> str:
    """The token that opens ``cluster`` through the gateway: 43 base64url characters, an
    HMAC (SECRET_KEY) of the cluster's uuid, its Connect server token and its rotation
    ``generation``. Stored nowhere; changing SECRET_KEY changes every gateway token."""
    value = f"{cluster.uuid}:{cluster.connect_token}:{generation(cluster)}"
    digest = salted_hmac("clusters.gateway.token", value, algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _url_host(host: str) -> str:
    """``host`` as it goes in a URL (an IPv6 address in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def connection_string(cluster: Cluster) -> str:
    """``sc://HOST:PORT/;use_ssl=true;token=...``: what a pyspark anywhere passes to
    ``SparkSession.builder.remote`` (or sets as SPARK_REMOTE) to reach ``cluster``
    through the gateway. HOST and PORT are SPARK_CONNECT_GATEWAY_HOST and _PORT."""
    host = _url_host(settings.SPARK_CONNECT_GATEWAY_HOST)
    port = settings.SPARK_CONNECT_GATEWAY_PORT
    return f"sc://{host}:{port}/;use_ssl=true;token={gateway_token(cluster)}"


def is_published(cluster: Cluster) -> bool:
    """True if the gateway routes to ``cluster``: a READY local cluster with a Connect
    server. (EMR clusters are reached through their master, not this gateway.)"""
    return cluster.backend == "local" and cluster.state == "READY" and bool(cluster.connect_url)


# --- Routes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One published cluster: the outside token, where its Connect server listens
    (``host:port``, an IP address: nginx resolves no names here), and the token that
    server requires."""

    cluster_id: int
    token: str
    upstream: str
    server_token: str


def _address(host: str) -> str:
    """``host`` as an IP address (nginx's grpc_pass with a variable needs a resolver for
    names; the portal resolves them here instead). Raises OSError if it does not resolve."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])


def route_for(cluster: Cluster) -> Route:
    """The Route of a published cluster. Raises ValueError for a token nginx's map could
    not hold verbatim, OSError for a Connect host that does not resolve."""
    host, port = cluster.connect_address
    address = _address(host)
    upstream = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    route = Route(cluster.pk, gateway_token(cluster), upstream, cluster.connect_token)
    if not (TOKEN_RE.match(route.token) and TOKEN_RE.match(route.server_token)):
        raise ValueError(f"cluster {cluster.pk} has a token the gateway cannot route")
    return route


def current_routes() -> list[Route]:
    """The Routes of every published cluster, by cluster id; one that cannot be routed is
    logged and left out (its users get 401, everyone else is unaffected)."""
    from clusters.models import Cluster  # this module is imported by settings-free tools

    routes = []
    ready = Cluster.objects.filter(backend="local", state="READY").exclude(connect_url="")
    for cluster in ready.order_by("pk"):
        try:
            routes.append(route_for(cluster))
        except (ValueError, OSError) as exc:
            log.warning("gateway: not routing cluster=%s: %s", cluster.pk, exc)
    return routes


def render_routes(routes: Iterable[Route]) -> str:
    """The nginx ``map`` blocks of ``routes``: ``$spark_connect_upstream`` (the Connect
    server's ``host:port``, empty for any other header) and ``$spark_connect_server_auth``
    (the header the server requires). Keys are the whole header value, ``Bearer <token>``,
    compared exactly (nginx maps are case-sensitive for plain strings)."""
    routes = list(routes)
    for route in routes:
        if not (TOKEN_RE.match(route.token) and TOKEN_RE.match(route.server_token)):
            raise ValueError(f"cluster {route.cluster_id} has a token the gateway cannot route")
        if not re.match(r"^[0-9A-Fa-f.:\[\]]+:[0-9]+$", route.upstream):
            raise ValueError(f"cluster {route.cluster_id} has an upstream that is no address")
    upstreams = "".join(
        f'    "Bearer {r.token}" "{r.upstream}";  # cluster {r.cluster_id}\n' for r in routes
    )
    auths = "".join(f'    "Bearer {r.token}" "Bearer {r.server_token}";\n' for r in routes)
    return (
        "# Generated by clusters.gateway: one line per READY local cluster.\n"
        "map $http_authorization $spark_connect_upstream {\n"
        '    default "";\n'
        f"{upstreams}"
        "}\n"
        "map $http_authorization $spark_connect_server_auth {\n"
        '    default "";\n'
        f"{auths}"
        "}\n"
    )


# --- nginx configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Where the gateway keeps its files (all under one 0700 directory)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def routes(self) -> Path:
        return self.root / "routes.conf"

    @property
    def pid(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def temp(self) -> Path:
        return self.root / "tmp"

    @property
    def tls(self) -> Path:
        return self.root / "tls"


def listen_address(bind: str, port: int) -> str:
    """nginx's ``listen`` address for ``bind`` and ``port`` (IPv6 in brackets)."""
    return f"{_url_host(bind)}:{port}"


def render_config(paths: Paths, bind: str, port: int, cert: Path, key: Path) -> str:
    """The whole nginx.conf of the gateway: one TLS + HTTP/2 server on ``bind:port``
    whose every request is either refused as gRPC UNAUTHENTICATED (no route for its
    token) or passed to the token's Connect server with the server's own token."""
    temp = paths.temp
    return f"""# Generated by clusters.gateway; rewritten at every start.
daemon off;
worker_processes 1;
pid {paths.pid};
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # Keys are "Bearer " and a 43-character token: more than the default bucket holds.
    map_hash_bucket_size 128;
    include {paths.routes};
    server {{
        listen {listen_address(bind, port)} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        # Plans, local relations and artifacts travel in requests; Spark Connect chunks
        # artifacts, and the Connect server bounds its messages (128 MiB by default).
        client_max_body_size 0;
        # A query may stream nothing for minutes (reattachable executions come back every
        # two minutes or so): well above that, so only a dead upstream ends a stream.
        grpc_read_timeout 600s;
        grpc_send_timeout 600s;
        location / {{
            if ($spark_connect_upstream = "") {{
                rewrite ^ /grpc-unauthenticated last;
            }}
            grpc_set_header Authorization $spark_connect_server_auth;
            grpc_pass grpc://$spark_connect_upstream;
        }}
        # A gRPC "trailers-only" answer: clients report UNAUTHENTICATED (16). (A plain HTTP
        # 401 with a body reaches gRPC clients as UNKNOWN.)
        location = /grpc-unauthenticated {{
            internal;
            default_type application/grpc;
            add_header grpc-status 16 always;
            add_header grpc-message "unknown or missing Spark Connect token" always;
            return 204;
        }}
    }}
}}
"""


def _write_private(path: Path, text: str | bytes) -> bool:
    """Write ``path`` atomically, mode 0600; False (and no write) if it already holds
    exactly ``text``."""
    data = text.encode() if isinstance(text, str) else text
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
    return True


# --- Certificates ----------------------------------------------------------------------------


def certificate_hosts() -> list[str]:
    """Names a self-signed certificate is made for: SPARK_CONNECT_GATEWAY_HOST, the host of
    PORTAL_ORIGIN and localhost (no duplicates, in that order)."""
    from urllib.parse import urlsplit

    names = [
        settings.SPARK_CONNECT_GATEWAY_HOST,
        urlsplit(settings.PORTAL_ORIGIN).hostname or "",
        "localhost",
    ]
    return list(dict.fromkeys(n for n in names if n))


def _san_names(cert) -> set[str]:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def ensure_self_signed(directory: Path, hosts: list[str], now: dt.datetime | None = None):
    """``(cert, key)`` paths of a self-signed certificate in ``directory`` for ``hosts``
    (DNS names or IP addresses), made (ECDSA P-256, valid SELF_SIGNED_DAYS days) unless
    the one there names the same hosts and is valid for more than RENEW_BEFORE_DAYS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        fresh = cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_BEFORE_DAYS)
        if key_path.exists() and fresh and _san_names(cert) == set(hosts):
            return cert_path, key_path
    except (OSError, ValueError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Its own trust anchor: clients list it as their root (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, key_pem)
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    os.chmod(cert_path, 0o644)  # public; the directory keeps strangers out anyway
    return cert_path, key_path


def self_signed() -> bool:
    """True when no certificate is configured (GATEWAY_TLS_CERT and _KEY)."""
    return not (settings.GATEWAY_TLS_CERT and settings.GATEWAY_TLS_KEY)


def gateway_dir() -> Path:
    """The gateway's directory: SPARK_CONNECT_GATEWAY_DIR (PORTAL_DATA_DIR/gateway)."""
    return Path(settings.SPARK_CONNECT_GATEWAY_DIR)


def self_signed_path() -> Path:
    """Where the self-signed certificate is (whether or not it was made yet)."""
    return Paths(gateway_dir()).tls / "cert.pem"


def tls_files(directory: Path | None = None) -> tuple[Path, Path]:
    """``(cert, key)``: the configured ones, or the self-signed ones in ``directory``
    (default: the gateway's ``tls``), made if needed. Raises GatewayError if a configured
    file cannot be read."""
    if not self_signed():
        cert, key = Path(settings.GATEWAY_TLS_CERT), Path(settings.GATEWAY_TLS_KEY)
        for path in (cert, key):
            if not os.access(path, os.R_OK):
                raise GatewayError(f"Cannot read the gateway's TLS file {path}")
        return cert, key
    return ensure_self_signed(directory or Paths(gateway_dir()).tls, certificate_hosts())


def self_signed_pem() -> str | None:
    """The self-signed certificate (PEM text), for clients to trust; None with a configured
    certificate, or before the gateway made one."""
    if not self_signed():
        return None
    try:
        return self_signed_path().read_text()
    except OSError:
        return None


def certificate_fingerprint(path: Path | None = None) -> str:
    """SHA-256 fingerprint of the certificate at ``path`` (default: the self-signed one),
    as ``AB:CD:...`` (what ``openssl x509 -fingerprint -sha256`` prints); "" if there is
    none (the gateway has not started yet, or it cannot be read)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        cert = x509.load_pem_x509_certificate((path or self_signed_path()).read_bytes())
    except (OSError, ValueError):
        return ""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# --- The process -----------------------------------------------------------------------------


class Gateway:
    """nginx, configured for the published clusters and kept up to date.

    ``start`` writes the configuration and starts nginx (a child process, in the
    foreground); ``refresh`` rewrites the routes and reloads nginx (SIGHUP: a graceful
    reload, open streams finish on the old workers) when they changed; ``stop`` ends it.
    """

    def __init__(
        self,
        root: Path | None = None,
        bind: str | None = None,
        port: int | None = None,
        nginx: str = "nginx",
    ) -> None:
        self.paths = Paths(root or gateway_dir())
        self.bind = bind if bind is not None else settings.SPARK_CONNECT_GATEWAY_BIND
        self.port = port if port is not None else settings.SPARK_CONNECT_GATEWAY_PORT
        self.nginx = nginx
        self.proc: subprocess.Popen | None = None

    def prepare(self) -> None:
        """Create the directory (0700), the certificate if self-signed, the routes and
        nginx.conf. Raises GatewayError."""
        self.paths.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.paths.root, 0o700)
        self.paths.temp.mkdir(exist_ok=True)
        cert, key = tls_files(self.paths.tls)
        self.write_routes(current_routes())
        _write_private(
            self.paths.config, render_config(self.paths, self.bind, self.port, cert, key)
        )

    def write_routes(self, routes: list[Route]) -> bool:
        """Write the routes file; True if it changed."""
        return _write_private(self.paths.routes, render_routes(routes))

    def start(self) -> None:
        """Prepare, check the configuration (``nginx -t``) and start nginx. Raises
        GatewayError if nginx is missing or refuses the configuration."""
        self.prepare()
        argv = [self.nginx, "-p", str(self.paths.root), "-c", str(self.paths.config)]
        try:
            checked = subprocess.run(
                [*argv, "-e", "stderr", "-t", "-q"], capture_output=True, text=True
            )
        except FileNotFoundError as exc:
            raise GatewayError("nginx is not installed (bin/setup installs it)") from exc
        if checked.returncode != 0:
            raise GatewayError(f"nginx refused the gateway's configuration: {checked.stderr}")
        self.proc = subprocess.Popen([*argv, "-e", "stderr"], stdin=subprocess.DEVNULL)

    def refresh(self) -> bool:
        """Rewrite the routes from the database and reload nginx if they changed; True if
        they did. Database errors propagate (the caller logs and tries again)."""
        changed = self.write_routes(current_routes())
        if changed and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
        return changed

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (SIGQUIT: graceful, then SIGKILL after ``timeout`` seconds)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def run_forever(self, interval: float) -> int:
        """Start, then refresh every ``interval`` seconds until nginx exits or SIGTERM /
        SIGINT arrives; returns nginx's exit status (0 after a signal)."""
        from django.db import close_old_connections

        stopping = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stopping.append(True))
        self.start()
        assert self.proc is not None
        log.info("gateway: listening on %s", listen_address(self.bind, self.port))
        try:
            while not stopping and self.proc.poll() is None:
                try:
                    if self.refresh():
                        log.info("gateway: routes changed, nginx reloaded")
                except Exception:  # the database may be restarting: keep the old routes
                    log.exception("gateway: could not refresh the routes")
                finally:
                    close_old_connections()
                time.sleep(interval)
        finally:
            self.stop()
        return 0 if stopping else (self.proc.returncode or 0)


def main() -> None:
    """``bin/gateway``: run the gateway until stopped."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        code = Gateway().run_forever(settings.SPARK_CONNECT_GATEWAY_REFRESH)
    except GatewayError as exc:
        log.error("gateway: %s", exc)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
