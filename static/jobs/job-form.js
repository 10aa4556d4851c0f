// Job form: show only the schedule fields that the chosen preset uses.
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
