"""Webhook and Apprise URLs must not reach the portal's own networks: refused when saved,
and again at each delivery (DNS rebinding), on the addresses actually connected to.

Nothing here contacts a refused address: names resolve through a stubbed resolver, and
the suite's network guard would fail any connection outside loopback anyway."""

import socket

import pytest
import requests
from django.core.exceptions import ValidationError

from notify import network, services
from notify.models import Delivery, Event, NotificationTarget

pytestmark = pytest.mark.django_db

real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def dns(monkeypatch):
    """``dns["name"] = "address"``: what a name resolves to from now on."""
    table: dict[str, str] = {}

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            family = socket.AF_INET6 if ":" in table[host] else socket.AF_INET
            return [(family, socket.SOCK_STREAM, 6, "", (table[host], port or 0))]
        if host.endswith(".example"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


def save(job, url, kind="webhook"):
    return services.save_target(
        NotificationTarget(job=job, kind=kind, url=url, events=[Event.RUN_FAILED])
    )[0]


def refused(job, url, kind="webhook") -> str:
    with pytest.raises(ValidationError) as caught:
        save(job, url, kind)
    return " ".join(caught.value.message_dict["url"])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.5/hook", "10.0.0.5 is a private address"),
        ("https://192.168.1.20:8443/hook", "192.168.1.20 is a private address"),
        ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
        ("http://0.0.0.0:8000/", "0.0.0.0 is"),
        ("http://100.64.0.1/", "100.64.0.1 is not a public address"),
    ],
)
def test_webhooks_to_private_and_link_local_addresses_are_refused(make_job, url, why):
    assert why in refused(make_job(), url)
    assert NotificationTarget.objects.count() == 0


def test_names_are_judged_by_what_they_resolve_to(make_job, dns):
    job = make_job()
    dns["metadata.example"] = "169.254.169.254"
    dns["intranet.example"] = "10.1.2.3"
    dns["mapped.example"] = "::ffff:10.1.2.3"
    assert "metadata.example resolves to 169.254.169.254 is a link-local" in refused(
        job, "https://metadata.example/hook"
    )
    assert "10.1.2.3 is a private address" in refused(job, "https://intranet.example/")
    assert "private address" in refused(job, "https://mapped.example/")
    assert "does not resolve" in refused(job, "https://nowhere.example/")


def test_loopback_is_refused_unless_a_setting_allows_it(make_job, settings):
    job = make_job()
    settings.NOTIFY_ALLOWED_NETWORKS = []
    assert "127.0.0.1 is a loopback address" in refused(job, "http://127.0.0.1:9/hook")
    assert "::1 is a loopback address" in refused(job, "http://[::1]:9/hook")
    settings.NOTIFY_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    assert save(job, "http://127.0.0.1:9/hook").pk
    assert "::1 is a loopback" in refused(job, "http://[::1]:9/hook")  # only what is listed


def test_apprise_urls_follow_the_same_rules_and_the_scheme_list(make_job, dns):
    job = make_job()
    dns["chat.example"] = "10.0.0.7"
    assert "link-local" in refused(job, "json://169.254.169.254/x", "apprise")
    assert "private address" in refused(job, "mmosts://chat.example/abcdefghijklmnop", "apprise")
    assert "private address" in refused(
        job, "workflows://chat.example:443/workflow/signature", "apprise"
    )
    # Services Apprise knows, but this portal does not offer.
    assert "Use one of the chat services" in refused(job, "mailto://u:p@gmail.com", "apprise")
    assert "Use one of the chat services" in refused(job, "https://hooks.example/x", "apprise")
    assert "does not understand" in refused(job, "slack://not-a-token", "apprise")
    # Chat services on fixed public hosts: the URL holds tokens, not a host to check.
    target = save(job, "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "apprise")
    assert target.secret == "" and "TIiaj" not in target.display_url


def test_webhook_urls_carry_no_credentials(make_job):
    assert "user name and password" in refused(make_job(), "http://u:p@127.0.0.1:9/hook")
    assert "starts with https://" in refused(make_job(), "ftp://127.0.0.1/hook")


def test_a_name_that_resolves_elsewhere_at_delivery_is_refused_then(
    make_job, dns, eager, finish, receiver
):
    """DNS rebinding: the name passed when saved, and points inside when sending."""
    job = make_job("trivial.ipynb", max_retries=0)
    dns["hooks.example"] = "127.0.0.1"
    dns["chat.example"] = "127.0.0.1"
    webhook = save(job, f"http://hooks.example:{receiver.port}/hook")
    chat = save(job, f"json://chat.example:{receiver.port}/chat", kind="apprise")
    dns["hooks.example"] = dns["chat.example"] = "169.254.169.254"
    eager(finish, job, "failed")
    for target in (webhook, chat):
        delivery = target.deliveries.get()
        assert delivery.state == Delivery.State.FAILED  # refused: not retried
        assert "169.254.169.254 is a link-local address" in delivery.last_error
        assert delivery.attempt_log.get().status_code is None
    assert receiver.received == []


def test_webhooks_connect_to_the_address_that_was_checked(make_job, dns, eager, finish, receiver):
    """The name resolves once per attempt; the connection uses that answer, with the name
    in the Host header."""
    job = make_job("trivial.ipynb", max_retries=0)
    dns["hooks.example"] = "127.0.0.1"
    save(job, f"http://hooks.example:{receiver.port}/hook")
    eager(finish, job, "failed")
    assert receiver.received[0].headers["Host"] == f"hooks.example:{receiver.port}"


def test_the_apprise_guard_checks_every_connection_urllib3_opens(dns, receiver):
    dns["inside.example"] = "10.9.8.7"
    dns["loop.example"] = "127.0.0.1"
    with network.guarded_connections():
        with pytest.raises(requests.ConnectionError) as caught:
            requests.post("http://inside.example/x", timeout=5)
        assert "10.9.8.7 is a private address" in str(caught.value)
        # An allowed name goes through, to the address checked.
        assert requests.post(f"http://loop.example:{receiver.port}/ok", timeout=5).ok
    # Outside the block urllib3 is left alone.
    assert network._guarding.get() is False
    assert len(receiver.received) == 1
