// Draws every Plotly figure of a rendered notebook from its JSON (user-content origin only).
"use strict";
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
