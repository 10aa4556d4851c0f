// Sweep page: a recorded number (#sweep-value) against a swept parameter
// (#sweep-parameter), one point per run. Data (json_script #sweep-data, inside the
// polled runs table, so it is read again after every poll):
// {parameters: [...], values: [...], points: [{run, parameters: {}, values: {}}]}.
"use strict";
(function () {
  var target = document.getElementById("sweep-chart");
  var valueSelect = document.getElementById("sweep-value");
  var parameterSelect = document.getElementById("sweep-parameter");
  if (!target || !valueSelect || !parameterSelect || !window.Plotly) return;

  function draw() {
    var data = document.getElementById("sweep-data");
    if (!data) return;
    var chart = JSON.parse(data.textContent);
    chart.values.forEach(function (name) { // names recorded since the page was drawn
      var known = Array.prototype.some.call(valueSelect.options, function (o) { return o.value === name; });
      if (!known) valueSelect.add(new Option(name, name));
    });
    var value = valueSelect.value, parameter = parameterSelect.value;
    var points = chart.points.filter(function (p) { return value in p.values; });
    var trace = {
      type: "scatter", mode: "markers", name: value,
      x: points.map(function (p) { return p.parameters[parameter]; }),
      y: points.map(function (p) { return p.values[value]; }),
      text: points.map(function (p) { return "run #" + p.run + " " + JSON.stringify(p.parameters); }),
      marker: { color: "#1565c0", size: 10 },
    };
    window.Plotly.react(target, [trace], {
      margin: { t: 20, r: 10, b: 50, l: 60 }, height: 300,
      xaxis: { title: { text: parameter } },
      yaxis: { title: { text: value } },
    }, { displaylogo: false, responsive: true });
    var empty = document.getElementById("sweep-chart-empty");
    if (empty && points.length) empty.textContent = "";
  }

  valueSelect.addEventListener("change", draw);
  parameterSelect.addEventListener("change", draw);
  document.addEventListener("htmx:afterSwap", draw);
  draw();
})();
