// Cluster page: the Copy button puts the Spark Connect connection string on the clipboard.
"use strict";
(function () {
  var button = document.getElementById("copy-gateway-url");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  function done(text) {
    button.textContent = text;
  }
  function fallback() {
    // A page served without a secure context: select the text and copy.
    var range = document.createRange();
    range.selectNodeContents(source);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    done(document.execCommand("copy") ? "Copied" : "Press Ctrl+C");
  }
  button.addEventListener("click", function () {
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, fallback);
    } else {
      fallback();
    }
  });
})();
