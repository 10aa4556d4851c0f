// Run page of a continuous job: its streaming queries' rows/s (read and processed) and
// batch durations, polled from the run's JSON endpoint every few seconds while it runs.
"use strict";
(function () {
  var target = document.getElementById("stream-chart");
  var summary = document.getElementById("stream-summary");
  if (!target || !window.Plotly) return;
  var url = target.dataset.url;
  var every = 3000;

  function traces(points) {
    var byQuery = {};
    points.forEach(function (p) { (byQuery[p.query] = byQuery[p.query] || []).push(p); });
    var out = [];
    Object.keys(byQuery).forEach(function (query) {
      var mine = byQuery[query];
      var x = mine.map(function (p) { return p.t; });
      var label = query ? query + ": " : "";
      out.push({ type: "scatter", mode: "lines", name: label + "input rows/s", x: x,
        y: mine.map(function (p) { return p.inputRowsPerSecond; }) });
      out.push({ type: "scatter", mode: "lines", name: label + "processed rows/s", x: x,
        y: mine.map(function (p) { return p.processedRowsPerSecond; }) });
      out.push({ type: "scatter", mode: "markers", name: label + "batch duration (ms)", x: x,
        y: mine.map(function (p) { return p.durationMs; }), yaxis: "y2", marker: { size: 5 } });
    });
    return out;
  }

  var layout = {
    margin: { t: 20, r: 60, b: 40, l: 60 }, height: 300, legend: { orientation: "h" },
    xaxis: { title: { text: "batch time (UTC)" } },
    yaxis: { title: { text: "rows/s" }, rangemode: "tozero" },
    yaxis2: { title: { text: "ms" }, overlaying: "y", side: "right", rangemode: "tozero" },
    uirevision: "keep",
  };

  function draw(data) {
    var points = data.points || [];
    target.dataset.points = String(points.length);
    window.Plotly.react(target, traces(points), layout, { displaylogo: false, responsive: true });
    if (summary) {
      summary.textContent = data.last_batch_at
        ? points.length + " recent batches · last at " + data.last_batch_at.slice(11, 19) + " UTC"
        : "No batch reported yet.";
    }
    return data.active;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data && !draw(data)) return; // the run ended: its last points stay drawn
        window.setTimeout(poll, every);
      })
      .catch(function () { window.setTimeout(poll, every * 2); });
  }
  poll();
})();
