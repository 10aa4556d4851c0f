// Job page: run duration over time, one marker per run coloured by its state.
"use strict";
(function () {
  var data = document.getElementById("duration-data");
  var target = document.getElementById("duration-chart");
  if (!data || !target || !window.Plotly) return;
  var runs = JSON.parse(data.textContent);
  var colours = {
    SUCCEEDED: "#2e7d32", FAILED: "#c62828", TIMED_OUT: "#ef6c00", LOST: "#6a1b9a",
    CANCELLED: "#757575", RUNNING: "#1565c0", QUEUED: "#90a4ae", SKIPPED: "#bdbdbd",
  };
  var states = Array.from(new Set(runs.map(function (r) { return r.state; })));
  var traces = states.map(function (state) {
    var mine = runs.filter(function (r) { return r.state === state; });
    return {
      type: "scatter", mode: "markers", name: mine[0].label || state,
      x: mine.map(function (r) { return r.started; }),
      y: mine.map(function (r) { return r.seconds; }),
      text: mine.map(function (r) { return "run #" + r.id; }),
      marker: { color: colours[state] || "#000", size: 9 },
    };
  });
  window.Plotly.newPlot(target, traces, {
    margin: { t: 20, r: 10, b: 40, l: 50 }, height: 280,
    yaxis: { title: { text: "duration (s)" }, rangemode: "tozero" }, xaxis: { title: { text: "started (UTC)" } },
  }, { displaylogo: false, responsive: true });
})();
