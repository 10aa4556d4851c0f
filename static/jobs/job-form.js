// Job form: show only the schedule fields that the chosen preset uses, and add rows of free
// parameters.
"use strict";
(function () {
  var kind = document.getElementById("id_schedule_kind");
  if (!kind) return;
  var uses = {
    manual: [], hourly: ["minute"], daily: ["at_time"], weekly: ["at_time", "weekday"],
    monthly: ["at_time", "day"], cron: ["cron"],
  };
  var all = ["at_time", "minute", "weekday", "day", "cron"];
  function update() {
    var shown = uses[kind.value] || [];
    all.forEach(function (name) {
      var input = document.getElementById("id_" + name);
      if (input && input.closest("label")) {
        input.closest("label").classList.toggle("hidden", shown.indexOf(name) < 0);
      }
    });
  }
  kind.addEventListener("change", update);
  update();
})();

// Free parameters (a notebook without a parameters cell): "Add a parameter" copies the
// last row with the next index and empty values. The rows come with the htmx fragment,
// so the click is handled on the document.
(function () {
  document.addEventListener("click", function (event) {
    if (!event.target || event.target.id !== "add-free-parameter") return;
    var rows = document.querySelectorAll("#free-parameters tr.free-parameter");
    if (!rows.length) return;
    var last = rows[rows.length - 1];
    var next = 0;
    rows.forEach(function (row) {
      var input = row.querySelector("input[name$='-name']");
      var match = input && /-free-(\d+)-name$/.exec(input.name);
      if (match) next = Math.max(next, Number(match[1]) + 1);
    });
    var row = last.cloneNode(true);
    row.querySelectorAll("input, select").forEach(function (field) {
      field.name = field.name.replace(/-free-\d+-/, "-free-" + next + "-");
      if (field.id) field.id = field.id.replace(/-free-\d+-/, "-free-" + next + "-");
      if (field.tagName === "SELECT") field.value = "str";
      else field.value = "";
    });
    last.parentNode.appendChild(row);
    row.querySelector("input").focus();
  });
})();
