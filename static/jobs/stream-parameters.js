// Job form: a continuous job's checkpoint_dir and output_dir (inputs marked
// data-stream-parameter) are set by the portal, so they are read-only while "Continuous" is
// ticked and show the job's own directory (data-portal-value); unticked, they are ordinary
// parameters again with their own value (data-own-value). The server decides on submit
// (jobs.forms.ParametersForm); this keeps the page honest in between. The fields also come
// with the htmx fragment of a newly chosen notebook, so each swap is looked at again.
"use strict";
(function () {
  var box = document.getElementById("id_continuous");
  if (!box) return;
  function update() {
    var portal = box.checked;
    document.querySelectorAll("input[data-stream-parameter]").forEach(function (input) {
      if (input.disabled === portal) return;
      if (input.type !== "checkbox") {
        if (portal) input.dataset.ownValue = input.value; // kept for unticking
        input.value = portal ? input.dataset.portalValue || "" : input.dataset.ownValue || "";
        input.placeholder = portal ? "Set by the portal" : "";
      }
      input.disabled = portal;
    });
  }
  box.addEventListener("change", update);
  document.addEventListener("htmx:afterSwap", update);
  update();
})();
