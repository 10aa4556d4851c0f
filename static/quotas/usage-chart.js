// Usage page: node-hours and CPU-hours by day (bars), and runs by day (markers, right axis).
"use strict";
(function () {
  var data = document.getElementById("usage-data");
  var target = document.getElementById("usage-chart");
  if (!data || !target || !window.Plotly) return;
  var days = JSON.parse(data.textContent);
  var x = days.map(function (d) { return d.day; });
  var traces = [
    { type: "bar", name: "node-hours", x: x, y: days.map(function (d) { return d.node_hours; }),
      marker: { color: "#1565c0" } },
    { type: "bar", name: "CPU-hours", x: x, y: days.map(function (d) { return d.cpu_hours; }),
      marker: { color: "#2e7d32" } },
    { type: "scatter", mode: "markers", name: "runs", yaxis: "y2", x: x,
      y: days.map(function (d) { return d.runs; }), marker: { color: "#ef6c00", size: 8 } },
  ];
  window.Plotly.newPlot(target, traces, {
    margin: { t: 20, r: 50, b: 40, l: 50 }, height: 300, barmode: "group",
    xaxis: { title: { text: "day (UTC)" }, type: "date" },
    yaxis: { title: { text: "hours" }, rangemode: "tozero" },
    yaxis2: { title: { text: "runs" }, overlaying: "y", side: "right", rangemode: "tozero" },
    legend: { orientation: "h" },
  }, { displaylogo: false, responsive: true });
})();
