// Copy buttons: each <button data-copy="ID"> puts the text of the element ID on the
// clipboard (a new API token, a Spark Connect connection string) and says it did.
"use strict";
(function () {
  function copy(button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
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
    var text = source.textContent.trim();
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done("Copied"); }, fallback);
    } else {
      fallback();
    }
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () { copy(button); });
  });
})();
