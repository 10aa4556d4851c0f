// Sortable tables: a click on a header of a `table.sortable` sorts its rows by that column
// (numbers as numbers, the rest as text), a second click reverses. The choice is kept
// when htmx replaces the table (a polled group page).
(function () {
  "use strict";
  var last = null; // {id, column, descending}

  function key(cell) {
    var text = cell ? cell.textContent.trim() : "";
    var number = parseFloat(text.replace(/^#/, ""));
    return isNaN(number) || !/^#?-?[0-9.]/.test(text) ? { n: null, t: text } : { n: number, t: text };
  }

  function compare(a, b) {
    if (a.n !== null && b.n !== null) return a.n - b.n;
    if (a.n !== null) return -1;
    if (b.n !== null) return 1;
    return a.t.localeCompare(b.t);
  }

  function sort(table, column, descending) {
    var body = table.tBodies[0];
    if (!body) return;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var order = compare(key(x.cells[column]), key(y.cells[column]));
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.setAttribute("aria-sort", i === column ? (descending ? "descending" : "ascending") : "none");
    });
  }

  document.addEventListener("click", function (event) {
    var th = event.target.closest("table.sortable thead th");
    if (!th) return;
    var table = th.closest("table");
    var column = th.cellIndex;
    var descending = !!(last && last.id === table.id && last.column === column && !last.descending);
    last = { id: table.id, column: column, descending: descending };
    sort(table, column, descending);
  });

  document.addEventListener("htmx:afterSwap", function () {
    if (!last) return;
    var table = document.getElementById(last.id);
    if (table) sort(table, last.column, last.descending);
  });
})();
