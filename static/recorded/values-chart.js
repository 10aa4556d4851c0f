// Job page: one recorded numeric value across the job's runs (x = the run's logical date),
// the value chosen in #recorded-name. Data: {name: [{x, y, run}, ...]} from json_script.
"use strict";
(function () {
  var data = document.getElementById("recorded-data");
  var target = document.getElementById("recorded-chart");
  var select = document.getElementById("recorded-name");
  if (!data || !target || !select || !window.Plotly) return;
  var series = JSON.parse(data.textContent);

  function draw() {
    var points = series[select.value] || [];
    var trace = {
      type: "scatter", mode: "lines+markers", name: select.value,
      x: points.map(function (p) { return p.x; }),
      y: points.map(function (p) { return p.y; }),
      text: points.map(function (p) { return "run #" + p.run; }),
      marker: { color: "#1565c0", size: 8 },
    };
    window.Plotly.react(target, [trace], {
      margin: { t: 20, r: 10, b: 40, l: 60 }, height: 280,
      xaxis: { title: { text: "logical date (UTC)" }, type: "date" },
      yaxis: { title: { text: select.value } },
    }, { displaylogo: false, responsive: true });
  }

  select.addEventListener("change", draw);
  draw();
})();
