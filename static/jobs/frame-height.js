// Grows each output frame marked data-grow to the height its notebook reports, so the
// notebook reads as part of the page, with the page's one scroll bar.
//
// The frame is sandboxed without allow-same-origin: its origin is "null", so the origin
// of a message says nothing about who sent it. A message is taken only when its source
// is that frame's own window, and only when it is a finite number, clamped to
// [MIN_HEIGHT, MAX_HEIGHT]. Anything else is ignored. The number sets the frame's
// height and nothing more: the frame gains no other power over this page.
"use strict";
(function () {
  var MIN_HEIGHT = 100;
  // A taller notebook scrolls inside its frame; a hostile one cannot make the page
  // absurdly tall.
  var MAX_HEIGHT = 200000;
  var frames = Array.prototype.slice.call(document.querySelectorAll("iframe[data-grow]"));

  window.addEventListener("message", function (event) {
    if (event.source === null) return;
    var frame = frames.find(function (f) { return f.contentWindow === event.source; });
    if (!frame) return;
    var value = event.data;
    if (typeof value !== "number" || !isFinite(value)) return;
    var height = Math.min(Math.max(Math.ceil(value), MIN_HEIGHT), MAX_HEIGHT);
    // The frame's own borders (box-sizing: border-box) on top of its content's height.
    var borders = frame.offsetHeight - frame.clientHeight;
    frame.style.height = height + borders + "px";
    frame.classList.add("notebook-frame-grown");
  });
})();
