"""The Spark UI of a real local cluster in Chromium, through the portal's reverse proxy.

The owner follows the cluster page's link to the master's UI, sees the cluster's Spark
Connect application listed, and opens that application's UI; the pages run sandboxed
(no access to the portal's cookies). Another user gets 404 for the same addresses.
"""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from clusters import services
from clusters.models import Cluster
from tests.e2e.conftest import ACTION_TIMEOUT_MS, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.sandbox,
    pytest.mark.django_db(transaction=True),
]

READY_TIMEOUT = 240  # s from start to READY: four JVMs on two cores


@pytest.fixture
def cluster(alice):
    """A READY local cluster of alice's (master, one worker, Spark Connect), started in
    this process, terminated at teardown."""
    cluster = services.launch_cluster(alice, services.ClusterSpec(name="ui", size=1))
    services.start_cluster(cluster.pk)
    try:
        yield services.wait_until_ready(cluster, timeout=READY_TIMEOUT)
    finally:
        services.terminate_now(Cluster.objects.get(pk=cluster.pk), "Test over.")


def test_the_owner_opens_the_spark_ui_and_others_get_404(
    portal, context, page, browser, cluster, alice, bob
):
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    login(page, portal, "alice")

    # --- The cluster page links to the master's UI through the portal.
    page.goto(f"{portal.url}/clusters/{cluster.pk}/")
    link = page.locator("#spark-ui")
    ui = f"/clusters/{cluster.pk}/ui/"
    expect(link).to_have_attribute("href", ui)
    with context.expect_page() as opened:
        link.click()
    master = opened.value
    master.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    master.wait_for_load_state()
    assert urlsplit(master.url).path == ui, master.url
    expect(master).to_have_title(f"Spark Master at {cluster.master_url}")
    app_name = f"Spark Connect ({cluster.name})"
    # The application's name links to its UI, proxied by the master.
    app_link = master.locator(f'a[href^="{ui}proxy/app-"]', has_text=app_name)
    expect(app_link).to_have_count(1, timeout=ACTION_TIMEOUT_MS)
    # Spark's scripts ran (they came from the portal, without the page's cookies).
    assert master.evaluate("typeof jQuery") == "function"
    # The page is sandboxed: an opaque origin, no way to the portal's cookies.
    assert master.evaluate(
        "() => { try { return document.cookie } catch (e) { return e.name } }"
    ) == ("SecurityError")
    assert master.evaluate("window.origin") == "null"

    # --- The application's UI, proxied by the master, under the same path.
    with master.expect_navigation():
        app_link.click()
    path = urlsplit(master.url).path
    assert path.startswith(f"{ui}proxy/app-") and path.endswith("/jobs/"), master.url
    expect(master.locator("body")).to_contain_text(f"{app_name} application UI")
    with master.expect_navigation():
        master.get_by_role("link", name="Stages").click()
    assert urlsplit(master.url).path == f"{path.removesuffix('jobs/')}stages/", master.url
    expect(master).to_have_title(f"{app_name} - Stages for All Jobs")

    broken = [c for c in console if c.startswith("pageerror") or "Content Security Policy" in c]
    assert broken == [], broken

    # --- Another user: 404 for the master's page and the application's.
    other = browser.new_context()
    try:
        bob_page = other.new_page()
        login(bob_page, portal, "bob")
        for url in (f"{portal.url}{ui}", master.url):
            response = bob_page.goto(url)
            assert response is not None and response.status == 404, url
            assert "Spark" not in bob_page.title()
        bob_page.goto(f"{portal.url}/clusters/{cluster.pk}/")
        expect(bob_page.locator("#spark-ui")).to_have_count(0)
    finally:
        other.close()
