// Draws every Plotly figure of a rendered notebook from its JSON (user-content origin only),
// and tells the portal page how tall the notebook is.
"use strict";
(function () {
  document.querySelectorAll("script.nb-plotly-data").forEach(function (blob) {
    var figure = JSON.parse(blob.textContent);
    var target = document.createElement("div");
    target.className = "nb-plotly-figure";
    blob.parentNode.appendChild(target);
    window.Plotly.newPlot(target, figure.data || [], figure.layout || {}, {
      responsive: true,
      displaylogo: false,
    });
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
