"""Untrusted notebook output cannot reach the portal: tests/notebooks/xss.ipynb tries
document.cookie, parent.document and a request to the portal, and gets none of them,
while its legitimate Plotly chart is still drawn."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login, wait_run_state

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Evaluated inside a user-content document: each probe answers a string, never throws.
PROBES = """async (portal) => {
  const out = {};
  try { out.cookie = 'value:' + JSON.stringify(document.cookie); }
  catch (e) { out.cookie = 'threw:' + e.name; }
  try { out.parent = 'value:' + String(window.parent.document.title); }
  catch (e) { out.parent = 'threw:' + e.name; }
  try { out.top = 'value:' + String(window.top.document.cookie); }
  catch (e) { out.top = 'threw:' + e.name; }
  // no-cors: without CSP the request would be sent (an opaque response), so a rejection
  // here is the CSP's doing, not CORS's.
  try {
    const r = await fetch(portal + '/', {mode: 'no-cors', credentials: 'include'});
    out.fetch = 'fetched:' + r.type;
  } catch (e) { out.fetch = 'refused:' + e.name; }
  try {
    const r = await fetch(portal + '/', {credentials: 'include'});
    out.fetch_cors = 'fetched:' + r.status;
  } catch (e) { out.fetch_cors = 'refused:' + e.name; }
  try { out.storage = 'value:' + String(window.localStorage.length); }
  catch (e) { out.storage = 'threw:' + e.name; }
  out.origin = String(self.origin);
  return out;
}"""


def content_frame(page, content_origin):
    frames = [f for f in page.frames if f.url.startswith(content_origin + "/content/")]
    assert len(frames) == 1, [f.url for f in page.frames]
    return frames[0]


def assert_isolated(probes: dict, portal_url: str, where: str) -> None:
    assert probes["cookie"] in ('value:""',) or probes["cookie"].startswith("threw:"), (
        where,
        probes,
    )
    assert probes["top"] == 'value:""' or probes["top"].startswith("threw:"), (where, probes)
    assert probes["fetch"].startswith("refused:"), (where, probes)
    assert probes["fetch_cors"].startswith("refused:"), (where, probes)
    assert probes["origin"] == "null", (where, probes)  # sandboxed: an opaque origin


def _frame_url(request) -> str:
    try:
        return request.frame.url
    except Exception:  # a service worker's request has no frame
        return ""


def test_notebook_output_cannot_reach_the_portal(
    request, page, context, portal, worker, make_job, alice, tmp_path
):
    from jobs import services

    job = make_job("xss.ipynb", name="xss")
    run = services.run_now(job, alice)
    run = wait_run_state(
        run.pk, ("SUCCEEDED", "FAILED", "TIMED_OUT", "LOST"), timeout=120, worker=worker
    )
    assert run.state == "SUCCEEDED", (
        f"{run.state}: {run.state_reason} {run.error_ename}: {run.error_evalue}\n{worker.tail()}"
    )

    login(page, portal, "alice")
    portal_cookies = {c["name"]: c["value"] for c in context.cookies(portal.url)}
    assert "sessionid" in portal_cookies, portal_cookies

    responses = []
    page.on("response", lambda r: responses.append(r))
    page.goto(f"{portal.url}/runs/{run.pk}/")
    title = page.title()
    assert title.startswith(f"Run #{run.pk} of xss"), title
    frame_src = page.locator("#notebook-frame").get_attribute("src")
    assert frame_src.startswith(f"{portal.content_origin}/content/"), frame_src
    assert page.locator("#notebook-frame").get_attribute("sandbox") == "allow-scripts"

    # The legitimate output works: the "safe chart" is drawn with the portal's plotly.js.
    notebook = page.frame_locator("#notebook-frame")
    expect(notebook.locator("svg.main-svg").first).to_be_attached(timeout=60_000)
    expect(notebook.locator("svg.main-svg .gtitle")).to_have_text("safe chart")
    # The payload's HTML is there, its script and handler are not (sanitised when rendered
    # by nh3, whose allow-list also drops the id: the element is found by its text).
    payload = notebook.locator(
        '.jp-OutputArea-output[data-mime-type="text/html"]', has_text="payload"
    )
    expect(payload).to_have_count(1)
    expect(payload.locator("div", has_text="payload")).to_have_text("payload")
    assert payload.locator("script").count() == 0
    assert notebook.locator("#xss-html script").count() == 0
    xss_html = payload.inner_html()
    assert "<script" not in xss_html and "onerror" not in xss_html and "pwned" not in xss_html, (
        xss_html
    )
    # display(Javascript(...)) is dropped too: no rendered JavaScript output anywhere.
    assert notebook.locator('[data-mime-type="application/javascript"]').count() == 0
    # The image whose width metadata carried a handler is drawn without it.
    expect(notebook.locator('img[src^="data:image/png"]')).to_have_count(1)
    assert notebook.locator("img[onerror]").count() == 0
    assert notebook.locator('img[src^="data:image/png"]').get_attribute("width") is None
    page.wait_for_timeout(1000)  # give anything that did slip through time to act

    # The portal page is untouched.
    assert page.title() == title
    assert page.title() not in ("pwned", "pwned-js")
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert {c["name"]: c["value"] for c in context.cookies(portal.url)} == portal_cookies
    assert context.cookies(portal.content_origin) == [], "the user-content origin set a cookie"

    # Inside the frame: no cookie, no parent document, no network.
    frame = content_frame(page, portal.content_origin)
    probes = frame.evaluate(PROBES, portal.url)
    print("probes in the frame:", probes)
    assert_isolated(probes, portal.url, "frame")
    assert probes["parent"].startswith("threw:"), probes  # SecurityError: cross-origin

    # The frame document's response: sandbox CSP, no network access, no cookie.
    [doc] = [r for r in responses if r.url == frame_src]
    assert doc.status == 200
    headers = doc.all_headers()
    csp = headers.get("content-security-policy", "")
    assert "sandbox allow-scripts" in csp, csp
    assert "connect-src 'none'" in csp, csp
    assert f"frame-ancestors {portal.url}" in csp, csp
    assert "set-cookie" not in headers, headers
    assert headers.get("x-content-type-options") == "nosniff"
    # Sent as its gzip copy (jobs.compression), which Chromium decoded: the chart is drawn.
    assert headers.get("content-encoding") == "gzip", headers

    # Opened top-level (not framed), the content URL is still sandboxed by its CSP.
    page2 = context.new_page()
    request.node._e2e_pages["page2"] = page2
    page2_response = page2.goto(frame_src)
    assert page2_response.status == 200
    assert "sandbox allow-scripts" in page2_response.all_headers().get(
        "content-security-policy", ""
    )
    expect(page2.locator("svg.main-svg").first).to_be_attached(timeout=60_000)
    top_probes = page2.evaluate(PROBES, portal.url)
    print("probes top-level:", top_probes)
    assert_isolated(top_probes, portal.url, "top-level")
    assert page2.evaluate("() => typeof window.__pwned") == "undefined"
    assert context.cookies(portal.content_origin) == []

    # The downloaded .html, opened from disk, draws its chart and runs no handler: the
    # payload is gone, and the file's own CSP would block an inline handler anyway.
    with page.expect_download() as info:
        page.click("#download-html")
    downloaded = tmp_path / "run.html"
    info.value.save_as(downloaded)
    tampered = tmp_path / "tampered.html"
    tampered.write_bytes(
        downloaded.read_bytes().replace(
            b"</body>",
            b"<img src=x onerror=\"window.__pwned=1;document.title='pwned-file'\"></body>",
            1,
        )
    )
    for path in (downloaded, tampered):
        offline = context.new_page()
        request.node._e2e_pages[path.stem] = offline
        offline.goto(path.as_uri())
        expect(offline.locator("svg.main-svg").first).to_be_attached(timeout=60_000)
        offline.wait_for_timeout(500)
        assert offline.evaluate("() => typeof window.__pwned") == "undefined", path.name
        assert "pwned" not in offline.title(), path.name
        offline.close()

    # The canary: the payload's request never left the browser, let alone reached a server,
    # and nothing the user content asked of the portal origin got through.
    canary = [r for r in context.requests if "canary" in r.url]
    assert all(r.failure for r in canary), [(r.url, r.failure) for r in canary]
    served = [
        f"{status} {host}{path}"
        for host, path, status in portal.server_requests
        if "canary" in path
    ]
    assert served == [], served
    from_content = [
        r
        for r in context.requests
        if _frame_url(r).startswith(portal.content_origin) and r.url.startswith(portal.url)
    ]
    assert all(r.failure for r in from_content), [(r.url, r.failure) for r in from_content]
