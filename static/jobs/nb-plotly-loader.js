// Draws the Plotly figures of a rendered notebook from their JSON (user-content origin, or
// the downloaded .html), and tells the portal page how tall the notebook is.
//
// Figures are drawn as they come into view: a notebook of 20 charts of 60,000 points took
// 10 s to draw whole, and nothing showed until then. Until it is drawn a figure is a
// placeholder of its height (jobs/render.py writes it). The observer uses the implicit
// root, the top-level viewport: the portal grows the frame to its content, so the frame
// itself does not scroll, and inside a cross-origin frame the implicit root is still the
// top page's viewport (clipped by the frame). Chromium ignores rootMargin there, so a
// figure is drawn when it appears rather than just before.
//
// Both scripts are first in <head> and async: they run as soon as they are fetched, while
// the page streams in. Figures are looked for as the parser adds them, when plotly.js is
// there, and when the page is parsed. Pages rendered before issue 14 have both scripts,
// not async, at the end of the body; the downloaded .html has them inline in <head>.
"use strict";
(function () {
  var pending = []; // placeholders seen, not drawn yet
  var due = []; // placeholders in view, waiting for plotly.js

  function draw(target) {
    var index = pending.indexOf(target);
    if (index < 0) return;
    pending.splice(index, 1);
    var figure = JSON.parse(target.previousElementSibling.textContent);
    window.Plotly.newPlot(target, figure.data || [], figure.layout || {}, {
      responsive: true,
      displaylogo: false,
    }).then(function () {
      target.classList.remove("nb-plotly-pending");
    });
  }

  function drawDue() {
    if (!window.Plotly) return;
    due.splice(0).forEach(draw);
  }

  var observer = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) {
        observer.unobserve(entry.target);
        due.push(entry.target);
      }
    });
    drawDue();
  }, { rootMargin: "200px 0px" }) : null;

  function scan() {
    document.querySelectorAll("script.nb-plotly-data:not([data-seen])").forEach(function (blob) {
      var target = blob.nextElementSibling;
      if (!target || !target.classList.contains("nb-plotly-figure")) {
        // Its placeholder may not be parsed yet; a page rendered before placeholders has
        // none, and gets one once the page is parsed.
        if (document.readyState === "loading") return;
        target = document.createElement("div");
        target.className = "nb-plotly-figure nb-plotly-pending";
        blob.parentNode.insertBefore(target, blob.nextSibling);
      }
      blob.setAttribute("data-seen", "");
      pending.push(target);
      if (observer) observer.observe(target);
      else due.push(target);
    });
    drawDue();
  }

  // plotly.js (full or basic bundle) is the script element just before this one.
  var plotly = document.currentScript && document.currentScript.previousElementSibling;
  if (window.Plotly) {
    scan();
  } else if (plotly && plotly.tagName === "SCRIPT") {
    plotly.addEventListener("load", scan);
  }
  if (document.readyState === "loading") {
    // Figures are looked for as the parser adds them, so that the first is drawn while
    // the rest of the page still streams in.
    var parsing = new MutationObserver(function (records) {
      for (var i = 0; i < records.length; i++) {
        var nodes = records[i].addedNodes;
        for (var j = 0; j < nodes.length; j++) {
          if (nodes[j].className === "nb-plotly-figure nb-plotly-pending") return scan();
        }
      }
    });
    parsing.observe(document.documentElement, { childList: true, subtree: true });
    document.addEventListener("DOMContentLoaded", function () {
      parsing.disconnect();
      scan();
    });
  } else {
    scan();
  }
  // Printing shows every figure (best effort: a large figure may still be drawing).
  window.addEventListener("beforeprint", function () {
    if (window.Plotly) pending.slice().forEach(draw);
  });

  // The portal page (static/jobs/frame-height.js) sizes the frame from this number alone:
  // a frame without allow-same-origin cannot be measured from outside. Nothing but the
  // height is sent; the target is "*" because this document's origin is opaque ("null")
  // and it does not know the portal's (frame-ancestors already limits who frames it).
  if (window.parent === window) return;
  var sent = -1;
  function report() {
    var root = document.documentElement;
    // The content's height, plus a horizontal scroll bar's when the page is wider than
    // the frame (clientHeight excludes it), so that no vertical scroll bar is needed.
    var height = Math.ceil(root.getBoundingClientRect().height) +
      Math.max(0, window.innerHeight - root.clientHeight);
    if (height !== sent) {
      sent = height;
      window.parent.postMessage(height, "*");
    }
  }
  // From the parsed page on: while it streams in, the frame keeps its first height.
  function watch() {
    report();
    if ("ResizeObserver" in window) new ResizeObserver(report).observe(document.documentElement);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
  window.addEventListener("load", report);
})();
